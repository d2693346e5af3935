"""The per-node ``eviction`` block of webhook.yaml (mqttlb.brokers.control) and the lever built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mqttlb.brokers.control import EmqxControl, HivemqControl, MosquittoControl, open_adapter
from mqttlb.brokers.emqx import EmqxEvictionAdapter
from mqttlb.brokers.eviction import EvictionError
from mqttlb.brokers.hivemq import HivemqEvictionAdapter
from mqttlb.brokers.mosquitto import MosquittoEvictionAdapter
from mqttlb.webhook.config import WebhookConfigError, load_config
from mqttlb.webhook.evict_lever import build_evict_lever


def write_config(tmp_path: Path, nodes: list[dict]) -> Path:
    path = tmp_path / "webhook.yaml"
    document = {
        "eds_path": str(tmp_path / "eds" / "eds.json"),
        "overload_file": str(tmp_path / "overload"),
        "state_file": str(tmp_path / "state.json"),
        "audit_log": str(tmp_path / "audit.jsonl"),
        "nodes": nodes,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_each_kind_opens_its_adapter_and_nodes_without_a_block_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t" * 20)
    (tmp_path / "secret").write_text("s3cret\n")
    config = load_config(
        write_config(
            tmp_path,
            [
                {"name": "a", "host": "127.0.0.1", "port": 1883, "eviction": {"kind": "mosquitto"}},
                {
                    "name": "b",
                    "host": "127.0.0.1",
                    "port": 1884,
                    "eviction": {
                        "kind": "hivemq",
                        "url": "http://127.0.0.1:9399",
                        "token_file": str(tmp_path / "token"),
                    },
                },
                {
                    "name": "c",
                    "host": "127.0.0.1",
                    "port": 1885,
                    "eviction": {
                        "kind": "emqx",
                        "url": "http://127.0.0.1:18083",
                        "node": "emqx@127.0.0.1",
                        "api_key": "mqttlb",
                        "api_secret_file": str(tmp_path / "secret"),
                    },
                },
                {"name": "d", "host": "127.0.0.1", "port": 1886},
            ],
        )
    )
    lever = build_evict_lever(config.nodes, timeout=1.0)
    assert lever is not None
    try:
        kinds = {name: type(adapter) for name, adapter in lever.adapters.items()}
        assert kinds == {"a": MosquittoEvictionAdapter, "b": HivemqEvictionAdapter, "c": EmqxEvictionAdapter}
    finally:
        lever.close()
    assert build_evict_lever([n for n in config.nodes if n.eviction is None], timeout=1.0) is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"kind": "vernemq"}, "nodes.0.eviction"),
        ({"kind": "hivemq", "token_file": "/x"}, "url"),
        ({"kind": "hivemq", "url": "ftp://x", "token_file": "/x"}, "http(s) URL"),
        ({"kind": "emqx", "url": "http://x:18083", "node": "n", "api_secret_file": "/x"}, "api_key"),
        ({"kind": "mosquitto", "bogus": 1}, "bogus"),
        ({"kind": "mosquitto", "client_id": ""}, "client_id"),
        ("mosquitto", "nodes.0.eviction"),
    ],
)
def test_a_bad_block_is_refused_in_one_line_naming_the_key(tmp_path: Path, block: object, message: str) -> None:
    path = write_config(tmp_path, [{"name": "a", "host": "127.0.0.1", "port": 1883, "eviction": block}])
    with pytest.raises(WebhookConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "\n" not in text and message in text and str(path) in text, text


def test_an_unreadable_secret_is_an_eviction_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    controls: list[MosquittoControl | HivemqControl | EmqxControl] = [
        MosquittoControl(kind="mosquitto", username="u", password_file=missing),
        HivemqControl(kind="hivemq", url="http://127.0.0.1:1", token_file=missing),
        EmqxControl(kind="emqx", url="http://127.0.0.1:1", node="n", api_key="k", api_secret_file=missing),
    ]
    for control in controls:
        with pytest.raises(EvictionError, match=str(missing)):
            open_adapter("127.0.0.1", 1883, control, 1.0)
