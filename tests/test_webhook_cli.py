"""The CLI: --help, clear errors on bad config, and a real waitress server (live)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from webhookhttp import AUTH, write_config

from mqttlb.stack.ephemeral import free_port
from mqttlb.webhook.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in out
        assert action.help


def test_bad_config_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "webhook.yaml"
    bad.write_text(yaml.safe_dump({"nodes": [], "eds_path": str(tmp_path / "eds.json")}))
    assert main(["--config", str(bad)]) == 2
    assert f"{bad}: nodes: List should have at least 1 item" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory" in capsys.readouterr().err
    # A bad parameter stops the webhook at load, before it serves or writes anything.
    bad_param = tmp_path / "params.yaml"
    config = {
        "eds_path": str(tmp_path / "eds.json"),
        "overload_file": str(tmp_path / "pressure"),
        "state_file": str(tmp_path / "state.json"),
        "audit_log": str(tmp_path / "audit.jsonl"),
        "nodes": [{"name": "node1", "host": "127.0.0.1", "port": 18831}],
        "params_overrides": {"policy": {"shed_levels": [0.5, 0.9]}},
    }
    bad_param.write_text(yaml.safe_dump(config))
    assert main(["--config", str(bad_param)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        f"{bad_param}: params_overrides.policy.shed_levels: must decrease strictly (each level is stricter "
        "than the last), got [0.5, 0.9]"
    )
    assert "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "webhook.yaml"]


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path, capsys):
    path = write_config(tmp_path, node_names=["node1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--config", str(path), "--listen", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.live
@pytest.mark.parametrize("dry_run", [False, True])
def test_serves_with_waitress_and_becomes_ready(tmp_path, dry_run):
    port = free_port()
    path = write_config(tmp_path, node_names=["node1", "node2"], listen="127.0.0.1:1")  # --listen wins
    cmd = [sys.executable, "-m", "mqttlb.webhook.cli", "--config", str(path), "--listen", f"127.0.0.1:{port}"]
    if dry_run:
        cmd.append("--dry-run")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, proc.poll()
        assert (tmp_path / "eds" / "eds.json").exists() != dry_run
        unauth = requests.post(f"http://127.0.0.1:{port}/alerts", json={}, timeout=2)
        assert unauth.status_code == 401
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 401  # reads need it too
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", headers=AUTH, timeout=2).text
        assert "mqttlb_webhook_rejected_requests_total" in metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert b"serving on 127.0.0.1" in out
