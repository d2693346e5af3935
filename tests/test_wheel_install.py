"""The built wheel, installed into a fresh virtualenv, works from any directory.

It installs only the ``mqttlb`` package (no generic top-level names such as ``stack`` or
``webhook``), ships the data it needs (rules, dashboards, runbooks, stack file) and never writes
into site-packages: generated files and state go under the current directory.

The fresh venv takes mqttlb's dependencies from the development venv through a plain path line
(not a site dir, so the development venv's editable-install hook is not loaded) to stay fast and
offline; mqttlb itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, status: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == status, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _snapshot(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.stat().st_mtime_ns for p in tree.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(venv bin dir, its site-packages) with the wheel built from the tracked files installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in tracked.stdout.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = work / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."],
         cwd=source)
    (wheel,) = dist.glob("mqttlb-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    )
    dev_site = Path(sysconfig.get_path("purelib"))
    (purelib / "dev-dependencies.pth").write_text(f"{dev_site}\n")
    _run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-deps",
          "-q", str(wheel)], cwd=work)
    return env_dir / "bin", purelib


def test_only_the_mqttlb_package_is_installed(installed: tuple[Path, Path]) -> None:
    _bin, site = installed
    top_level = sorted(p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")
                       and p.name != "__pycache__")
    assert top_level == ["mqttlb"]
    record = next(site.glob("mqttlb-*.dist-info")) / "top_level.txt"
    if record.exists():
        assert record.read_text().split() == ["mqttlb"]


def test_commands_run_from_another_directory_and_write_nothing_into_site_packages(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, site = installed
    cwd = tmp_path / "operator"
    cwd.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for var in ("MQTTLB_STATE_DIR", "MQTTLB_STACK_FILE", "MQTTLB_MOSQUITTO_PLUGIN"):
        env.pop(var, None)
    before = _snapshot(site)
    mqttlb = str(bin_dir / "mqttlb")

    assert "commands:" in _run([mqttlb, "--help"], cwd, env).stdout
    # no rules/ here: check says what it looked for and how to point it elsewhere
    no_rules = _run([mqttlb, "rules", "check"], cwd, env, status=2)
    assert no_rules.stderr == (
        f"error: no rules/ folder in {cwd}: pass --dir DIR (the folder `mqttlb rules generate --out DIR` wrote), "
        "or run from the checkout\n"
    )
    # the wheel carries no Mosquitto plugin: check and up say how to get it, in one line, and create nothing
    venv_dir = bin_dir.parent
    no_plugin = (
        f"mqttlb stack: error: the Mosquitto eviction plugin is not built: {venv_dir}/lib/mqttlb/mqttlb_evict.so "
        f"is missing; mqttlb is installed without it: build it from an mqttlb checkout with "
        f"`make -C brokers/mosquitto-plugin VENV={venv_dir}` or set MQTTLB_MOSQUITTO_PLUGIN=/path/to/mqttlb_evict.so\n"
    )
    for command in ("check", "up"):
        refused = _run([mqttlb, "stack", command], cwd, env, status=2)
        assert (refused.stdout, refused.stderr) == ("", no_plugin)
        assert list(cwd.iterdir()) == []
    plugin = tmp_path / "mqttlb_evict.so"  # check looks for the file; the live tests load the real one
    plugin.write_bytes(b"")
    env["MQTTLB_MOSQUITTO_PLUGIN"] = str(plugin)
    _run([mqttlb, "rules", "generate"], cwd, env)
    assert sorted(p.name for p in (cwd / "rules").iterdir()) == ["mqttlb-alerts.yml", "mqttlb-recording.yml"]
    _run([mqttlb, "rules", "check"], cwd, env)
    _run([mqttlb, "dashboards", "generate"], cwd, env)
    assert len(list((cwd / "dashboards" / "generated").glob("*.json"))) == 3
    _run([mqttlb, "dashboards", "check", "--dir", str(cwd / "dashboards" / "generated")], cwd, env)
    checked = _run([mqttlb, "stack", "check"], cwd, env)
    assert f"state in {cwd / '.stack'}" in checked.stdout

    after = _snapshot(site)
    new_or_changed = sorted(k for k, v in after.items() if before.get(k) != v and "__pycache__" not in k)
    assert new_or_changed == [], f"written inside site-packages: {new_or_changed}"


def test_the_wheel_ships_its_data(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, site = installed
    shipped = site / "mqttlb" / "_shipped"
    for relative in ("rules/mqttlb-alerts.yml", "dashboards/generated/mqttlb-rebalancer.json",
                     "docs/runbooks/MqttBrokerCpuHigh.md", "stack/stack.yaml", "stack/docker-compose.yml"):
        assert (shipped / relative).is_file(), relative
    probe = ("from mqttlb.shipped import shipped, checkout_root; import mqttlb.stack.config as c; "
             "print(checkout_root(), shipped('rules'), c.DEFAULT_STACK_FILE)")
    out = _run([str(bin_dir / "python"), "-c", probe], tmp_path).stdout.split()
    assert out[0] == "None"
    assert all(Path(p).is_relative_to(shipped) for p in out[1:])
    # no Makefile to run: `stack up` tells the operator to stop the stack with the mqttlb command
    commands = "from mqttlb.stack.runner import operator_commands as o; print(o().down, o().status)"
    printed = _run([str(bin_dir / "python"), "-c", commands], tmp_path).stdout.strip()
    assert printed == "`mqttlb stack down` `mqttlb stack status`"
