"""The rule generator: committed files match, parameters flow into the rules, bad input is refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mqttlb import contract as s
from mqttlb import rulegen
from mqttlb.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "rules"
RUNBOOKS = REPO / "docs" / "runbooks"

RECORDING_NAMES = sorted(
    value
    for name, value in vars(s).items()
    if name.startswith(("NODE_", "CLUSTER_")) and isinstance(value, str) and ":" in value
)


# Alerts on a measured quantity show it; the others (up == 0, a status flag) have no value worth showing.
SHOWS_VALUE = {s.ALERT_CPU_HIGH, s.ALERT_CPU_CRITICAL, s.ALERT_IMBALANCED, s.ALERT_REBALANCER_FAILING}


def _rules(text: str) -> list[dict]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def default_files() -> dict[str, str]:
    return rulegen.render_rule_files(load_params())


def test_committed_rule_files_match_generated(default_files: dict[str, str]) -> None:
    for name, text in default_files.items():
        committed = (RULES_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"rules/{name} drifted: run `python -m mqttlb.rulegen generate --out rules`"


def test_rendering_is_deterministic() -> None:
    assert rulegen.render_rule_files(load_params()) == rulegen.render_rule_files(load_params())


def test_every_recording_name_in_series_is_recorded_once(default_files: dict[str, str]) -> None:
    recorded = [r["record"] for r in _rules(default_files[rulegen.RECORDING_FILE])]
    assert sorted(recorded) == RECORDING_NAMES
    for name in recorded:
        # Our own level prefix: kubernetes-mixin records node:... and cluster:... rules.
        assert re.fullmatch(r"mqttlb_(node|cluster):[a-z_]+:[a-z_]+", name), name


def test_every_aggregation_keeps_namespace_and_the_mqtt_cluster_label() -> None:
    # kube-prometheus: `cluster` is the Kubernetes cluster, and AlertmanagerConfig routes match `namespace`.
    params = load_params({"mqtt_cluster_label": "broker_fleet"})
    files = rulegen.render_rule_files(params)
    text = "\n".join(files.values())
    assert "cluster=" not in text and "(cluster" not in text and " cluster)" not in text
    assert "$labels.cluster " not in text and "$labels.broker_fleet" in text
    groupings = re.findall(r"\b(?:by|on) \(([^)]*)\)", text)
    assert groupings
    for labels in groupings:
        names = [n.strip() for n in labels.split(",")]
        if names == ["namespace", "pod"]:
            continue  # the cAdvisor join (not generated with the default source)
        assert names[0] == "namespace", labels
        if "job" not in names and s.ENVOY_CLUSTER_LABEL not in names:
            assert names[1] == "broker_fleet", labels


def test_each_expression_lives_in_one_place(default_files: dict[str, str]) -> None:
    # Alerts use recorded names instead of repeating the PromQL behind them.
    alerts_text = default_files[rulegen.ALERTS_FILE]
    for raw in (s.BROKER_CPU_SECONDS, s.BROKER_CPU_CAPACITY, s.BROKER_CLIENTS_CONNECTED):
        assert raw not in alerts_text
    exprs = [r["expr"] for r in _rules(default_files[rulegen.RECORDING_FILE])]
    assert len(exprs) == len(set(exprs))


def test_alerts_carry_labels_annotations_and_runbooks(default_files: dict[str, str]) -> None:
    assert load_params().runbook_base_url is None
    alerts = {r["alert"]: r for r in _rules(default_files[rulegen.ALERTS_FILE])}
    assert sorted(alerts) == sorted(s.ALERT_NAMES)
    expected_actions = {
        s.ALERT_CPU_HIGH: (s.Action.REBALANCE, "warning"),
        s.ALERT_CPU_CRITICAL: (s.Action.SHED, "critical"),
        s.ALERT_IMBALANCED: (s.Action.REBALANCE, "warning"),
        s.ALERT_BROKER_DOWN: (s.Action.PAGE, "critical"),
        s.ALERT_ENDPOINT_UNHEALTHY: (s.Action.PAGE, "warning"),
        s.ALERT_EXPORTER_DOWN: (s.Action.PAGE, "critical"),
        s.ALERT_REBALANCER_FAILING: (s.Action.PAGE, "critical"),
        s.ALERT_CPU_MISSING: (s.Action.PAGE, "warning"),
    }
    for name, rule in alerts.items():
        assert (rule["labels"]["action"], rule["labels"]["severity"]) == expected_actions[name]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        if name in SHOWS_VALUE:
            assert "$value" in annotations["description"], name
        assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"  # runbook_base_url null: the shipped file
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.is_file(), f"missing runbook {runbook}"
        text = runbook.read_text(encoding="utf-8")
        for heading in ("## What it means", "## What mqttlb does", "## What you do"):
            assert heading in text, f"{runbook} lacks {heading!r}"


def test_parameters_flow_into_the_rules() -> None:
    params = load_params(
        {
            "broker_selector": 'job="brokers-prod", env="eu"',
            "rate_window": "2m",
            "cpu_high": 0.6,
            "cpu_high_for": "45s",
            "imbalance_max_squared_deviation": 0.09,
            "imbalance_min_mean": 0.2,
            "runbook_base_url": "https://runbooks.example/mqttlb/",
        }
    )
    files = rulegen.render_rule_files(params)
    recording = files[rulegen.RECORDING_FILE]
    assert 'mqtt_broker_process_cpu_seconds_total{job="brokers-prod", env="eu"}[2m]' in recording
    assert 'job="mqtt-brokers"' not in recording
    alerts = {r["alert"]: r for r in _rules(files[rulegen.ALERTS_FILE])}
    high = alerts[s.ALERT_CPU_HIGH]
    assert high["expr"] == f"{s.NODE_CPU} > 0.6"
    assert high["for"] == "45s"
    assert "above 60% for 45s" in high["annotations"]["description"]
    assert high["annotations"]["runbook_url"] == "https://runbooks.example/mqttlb/MqttBrokerCpuHigh.md"
    imbalanced = alerts[s.ALERT_IMBALANCED]["expr"]
    assert f"{s.CLUSTER_CPU_MSD} > 0.09" in imbalanced
    assert f"{s.CLUSTER_CPU_MEAN} >= 0.2" in imbalanced
    assert f"{s.CLUSTER_NODES_UP} >= 2" in imbalanced


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rate_window": "30 seconds"}, "rate_window: not a Prometheus duration"),
        ({"cpu_high_for": "5"}, "cpu_high_for: not a Prometheus duration"),
        ({"broker_selector": "job=mqtt-brokers"}, "broker_selector: not a label matcher list"),
        ({"webhook_selector": 'job="x"} or vector(1'}, "webhook_selector: not a label matcher list"),
    ],
)
def test_bad_parameters_are_refused_at_load(override: dict, message: str) -> None:
    # Checked once, when the parameters are loaded (tests/test_params_invalid.py has the full table).
    with pytest.raises(ParamsError, match=message):
        load_params(override)


def test_cli_generate_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rules"
    assert rulegen.main(["generate", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([rulegen.RECORDING_FILE, rulegen.ALERTS_FILE])
    assert rulegen.main(["check", "--dir", str(out)]) == 0

    alerts = out / rulegen.ALERTS_FILE
    alerts.write_text(alerts.read_text().replace("> 0.75", "> 0.7"))
    capsys.readouterr()
    assert rulegen.main(["check", "--dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert rulegen.ALERTS_FILE in err and rulegen.RECORDING_FILE not in err

    (out / rulegen.RECORDING_FILE).unlink()
    assert rulegen.main(["check", "--dir", str(out)]) == 1
    assert rulegen.RECORDING_FILE in capsys.readouterr().err


def test_cli_check_reports_a_stale_rule_file_prometheus_would_still_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rules"
    assert rulegen.main(["generate", "--out", str(out)]) == 0
    (out / "mqttlb-old-alerts.yml").write_text("groups: []\n")  # e.g. left behind by a rename
    (out / "notes.txt").write_text("not a rule file\n")
    capsys.readouterr()
    assert rulegen.main(["check", "--dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'mqttlb-old-alerts.yml'}: no source generates this file" in err
    assert "notes.txt" not in err and rulegen.ALERTS_FILE not in err
    assert f"mqttlb rules generate --out {out}" in err


def test_cli_committed_rules_have_no_drift() -> None:
    assert rulegen.main(["check", "--dir", str(RULES_DIR)]) == 0


def test_cli_overrides_file(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("cpu_high: 0.5\n")
    out = tmp_path / "rules"
    assert rulegen.main(["--overrides", str(overrides), "generate", "--out", str(out)]) == 0
    assert f"{s.NODE_CPU} > 0.5" in (out / rulegen.ALERTS_FILE).read_text()
    # The default-parameter check sees the override as drift.
    assert rulegen.main(["check", "--dir", str(out)]) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cpu_high: [1, 2\n", "not valid YAML"),
        ("- cpu_high\n", "must be a mapping"),
        ("cpu_hihg: 0.5\n", "cpu_hihg: unknown key"),
        ("cpu_high: 3\n", "cpu_high: Input should be less than or equal to 1"),
        ("rate_window: 1 minute\n", "rate_window"),
    ],
)
def test_cli_bad_overrides_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(content)
    out = tmp_path / "rules"
    assert rulegen.main(["--overrides", str(overrides), "generate", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rulegen.main(["--overrides", str(tmp_path / "nope.yaml"), "generate", "--out", str(tmp_path)]) == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in capsys.readouterr().err
    assert rulegen.main(["check", "--dir", str(tmp_path / "absent")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert rulegen.main(["generate", "--out", str(a_file)]) == 2
    assert a_file.read_text() == "x"


def test_cli_check_without_rules_here_says_what_it_looked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert rulegen.main(["check"]) == 2
    assert capsys.readouterr().err == (
        f"error: no rules/ folder in {tmp_path}: pass --dir DIR (the folder `mqttlb rules generate --out DIR` "
        "wrote), or run from the checkout\n"
    )
    assert rulegen.main(["generate"]) == 0
    assert rulegen.main(["check"]) == 0
