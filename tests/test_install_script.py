"""`make stack-up` through stack/install.sh: a stack file that cannot be read is refused in the stack's one
line (install.sh skips it when it looks for the broker, `mqttlb stack up` names it), not by a silent exit of
the install step.  Runs the real install step, which is quick once everything is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_stack_up_names_a_missing_stack_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    env = {**os.environ, "MQTTLB_STACK_FILE": str(missing), "MQTTLB_STATE_DIR": str(tmp_path / "state")}
    for var in ("NODES", "BROKER", "MQTTLB_BROKER"):
        env.pop(var, None)
    result = subprocess.run(["make", "-s", "stack-up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert lines == [
        f"mqttlb stack: error: {missing}: cannot read: No such file or directory "
        "(file named by environment variable MQTTLB_STACK_FILE)"
    ], result.stderr
    assert "stack-up" in result.stderr.splitlines()[-1]  # the install step passed; the stack refused the file
    assert not (tmp_path / "state").exists()
