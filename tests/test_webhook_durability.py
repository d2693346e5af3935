"""Crash safety: SIGKILL mid-publication leaves a complete EDS file; state and audit survive too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mqttlb.webhook.eds import CLA_TYPE, read_eds_file
from mqttlb.webhook.state import StateError, WebhookState, load_state, save_state

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mqttlb.webhook.eds import Endpoint, write_eds_file
    path = Path(sys.argv[1])
    deadline = time.monotonic() + 10
    for version in range(1, 200_001):  # bounded in count and time
        if time.monotonic() > deadline:
            break
        eps = [Endpoint(f"node{i}", "127.0.0.1", 18830 + i, 1 + (version + i) % 400) for i in range(1, 51)]
        write_eds_file(path, version, "mqtt_brokers", eps)
        if version == 3:
            print("started", flush=True)
    """
)


def assert_complete(doc: dict) -> int:
    assert doc["type_url"] == CLA_TYPE
    (cla,) = doc["resources"]
    endpoints = cla["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["hostname"] for e in endpoints] == [f"node{i}" for i in range(1, 51)]
    version = int(doc["version_info"])
    assert all(
        e["load_balancing_weight"] == 1 + (version + i) % 400 for i, e in enumerate(endpoints, start=1)
    )
    return version


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4])
def test_sigkill_mid_write_leaves_a_valid_eds_file(tmp_path, delay):
    path = tmp_path / "eds" / "eds.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"started"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the writer must have been killed mid-loop, not finished"
    version = assert_complete(read_eds_file(path))
    assert version >= 3
    # the watched directory holds only the EDS file: temp files live outside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["eds.json"]


def test_state_round_trip_and_corrupt_state_is_a_clear_error(tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) is None
    state = WebhookState(
        version=7, nodes=["a", "b"], weights={"a": 10, "b": 190}, shed_level=2, shed_anchor=40
    )
    save_state(path, state)
    assert load_state(path) == state
    path.write_text('{"version": -1}')
    with pytest.raises(StateError):
        load_state(path)
    path.write_text("{trunc")
    with pytest.raises(StateError):
        load_state(path)
    path.write_text(json.dumps({"unknown": 1}))
    with pytest.raises(StateError):
        load_state(path)
