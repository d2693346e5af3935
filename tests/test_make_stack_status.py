"""`make stack-status` shows both views (the components, then `mqttlb status`) even when the first reports a
component down, and fails then (make's own exit status 2).  Trial: `stack status && status` skipped the
second view whenever anything was down."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_both_views_and_a_failure_when_the_stack_is_down(tmp_path: Path) -> None:
    env = {**os.environ, "MQTTLB_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "stack-status"], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"stack in {tmp_path / 'state'} is not running" in run.stdout  # mqttlb stack status
    assert f"mqttlb status: error: no stack was started in {tmp_path / 'state'}" in run.stderr  # mqttlb status
