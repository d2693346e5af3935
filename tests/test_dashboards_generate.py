"""Generation is deterministic, the committed JSON matches its sources and drift is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqttlb.dashboards import build, cli
from mqttlb.params import load_params

REPO = Path(__file__).resolve().parents[1]


def _generate(out: Path, *extra: str) -> dict[str, bytes]:
    assert cli.main(["generate", "--out", str(out), *extra]) == 0
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))}


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    first = _generate(tmp_path / "a")
    second = _generate(tmp_path / "b")
    assert set(first) == {"mqttlb-cluster-balance.json", "mqttlb-connections.json", "mqttlb-rebalancer.json"}
    assert first == second
    for name, data in first.items():
        text = data.decode("utf-8")
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n", name


def test_generation_does_not_depend_on_the_interpreter_run(tmp_path: Path) -> None:
    """A fresh interpreter with another hash seed writes the same bytes (no set/dict-order leaks)."""
    expected = _generate(tmp_path / "here")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = tmp_path / "subprocess"
    subprocess.run(
        [sys.executable, "-m", "mqttlb.dashboards.cli", "generate", "--out", str(out)],
        check=True,
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))} == expected


def test_second_generate_rewrites_nothing(tmp_path: Path) -> None:
    _generate(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")}
    assert build.write_all(load_params(), tmp_path) == []
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")} == mtimes


def test_committed_dashboards_match_their_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check"]) == 0, capsys.readouterr().err


def test_check_names_a_drifted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path)
    target = tmp_path / "mqttlb-connections.json"
    data = json.loads(target.read_text())
    data["panels"][1]["title"] = "edited in the Grafana UI"
    target.write_text(json.dumps(data, sort_keys=True, indent=2) + "\n")
    capsys.readouterr()
    assert cli.main(["check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(target) in err
    assert "mqttlb-cluster-balance.json" not in err and "mqttlb-rebalancer.json" not in err


def test_check_reports_whitespace_only_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path)
    target = tmp_path / "mqttlb-rebalancer.json"
    target.write_text(target.read_text().rstrip("\n"))
    capsys.readouterr()
    assert cli.main(["check", "--dir", str(tmp_path)]) == 1
    assert str(target) in capsys.readouterr().err


def test_check_reports_missing_and_orphaned_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path)
    (tmp_path / "mqttlb-rebalancer.json").unlink()
    (tmp_path / "old-dashboard.json").write_text("{}\n")
    capsys.readouterr()
    assert cli.main(["check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mqttlb-rebalancer.json'}: missing (run `mqttlb dashboards generate --out {tmp_path}`)" in err
    assert f"{tmp_path / 'old-dashboard.json'}: no source generates this file" in err


def test_thresholds_follow_the_parameter_file(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    text = (REPO / "mqttlb" / "params.yaml").read_text()
    params_file.write_text(
        text.replace("cpu_high: 0.75", "cpu_high: 0.6").replace("cpu_critical: 0.85", "cpu_critical: 0.7")
    )
    files = _generate(tmp_path / "out", "--params", str(params_file))
    balance = json.loads(files["mqttlb-cluster-balance.json"])
    cpu = next(p for p in balance["panels"] if p["title"] == "CPU utilisation per node")
    steps = [s["value"] for s in cpu["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 0.6, 0.7]


def test_generate_refuses_a_bad_parameter_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text((REPO / "mqttlb" / "params.yaml").read_text().replace("cpu_high: 0.75", "cpu_high: 7"))
    out = tmp_path / "out"
    assert cli.main(["generate", "--params", str(bad), "--out", str(out)]) == 2
    assert "cpu_high" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["render", "--out", "x"],  # --prometheus missing
        ["render", "--prometheus", "localhost:9090", "--out", "x"],  # no scheme
        ["queries", "--range", "fifteen"],
        ["queries", "--var", "cluster"],
        ["queries", "--var", "=local"],
        ["bogus"],
    ],
)
def test_cli_rejects_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_every_flag_is_documented() -> None:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(subparsers, dict) and set(subparsers) == {"generate", "check", "render", "queries", "lint"}
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help text"
