"""The runbooks say what mqttlb does now: each claim in a runbook is checked against the code.

A claim is a phrase in a runbook's "What mqttlb does" section paired with a check that runs the
product's own decision code.  Changing the behaviour fails the check; rewording the runbook without
the claim fails the phrase lookup; and sentences describing removed behaviour must not come back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mqttlb import alertmanager_config, contract
from mqttlb.brokers.eviction import ClientLoad
from mqttlb.contract import OutcomeKind
from mqttlb.params import load_params
from mqttlb.webhook import eviction_policy
from mqttlb.webhook.plan import Desired, Observation, PassResult, decide_pass, timing_for
from mqttlb.webhook.policy import NodeSample, new_connection_shares
from mqttlb.webhook.state import WebhookState

RUNBOOKS = Path(__file__).resolve().parents[1] / "docs" / "runbooks"
PARAMS = load_params()
POLICY = PARAMS.policy
TIMING = timing_for(PARAMS, 5.0)
NODES = ["node1", "node2", "node3"]
NOW = 10_000.0
HOT = {"node1": 0.9, "node2": 0.3, "node3": 0.2}
EVEN = dict.fromkeys(NODES, 0.3)
EVICTION = eviction_policy.eviction_settings(PARAMS, TIMING.step_seconds, TIMING.pass_seconds)


def observe(
    cpu: dict[str, float], down: frozenset[str] = frozenset(), fast: dict[str, float] | None = None
) -> Observation:
    samples = {n: NodeSample(cpu=c, connections=100.0, age_seconds=1.0) for n, c in cpu.items()}
    return Observation(samples=samples, fast_cpu=fast or {}, down=down, active_connections=300, cluster_connections=300)


def neutral(**changes: object) -> WebhookState:
    state = WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, POLICY.neutral_weight))
    return state.model_copy(update=changes)


def run(state: WebhookState, desired: Desired, observation: Observation, now: float = NOW) -> PassResult:
    return decide_pass(state, desired, observation, POLICY, TIMING, NODES, now)


REBALANCING = Desired(rebalance_firing=True, shed_firing=False, firing_alerts=(contract.ALERT_CPU_HIGH,))
SHEDDING = Desired(rebalance_firing=False, shed_firing=True, firing_alerts=(contract.ALERT_CPU_CRITICAL,))
QUIET = Desired(rebalance_firing=False, shed_firing=False)


def one_step_per_interval() -> None:
    first = run(neutral(), REBALANCING, observe(HOT))
    assert [s.kind for s in first.steps] == [OutcomeKind.REBALANCE]
    second = run(first.state, REBALANCING, observe(HOT), NOW + TIMING.step_seconds - 1)
    assert [s.kind for s in second.steps] == [OutcomeKind.NOOP]
    third = run(first.state, REBALANCING, observe(HOT), NOW + TIMING.step_seconds)
    assert [s.kind for s in third.steps] == [OutcomeKind.REBALANCE]


def steers_early() -> None:
    fast = {"node1": 1.0, "node2": 0.2, "node3": 0.2}  # saturated: steered after early_steer_for
    state = run(neutral(), QUIET, observe(HOT, fast=fast)).state
    assert state.hot_since == NOW
    passes = round(TIMING.early_steer_seconds / TIMING.pass_seconds)
    for i in range(1, passes):
        result = run(state, QUIET, observe(HOT, fast=fast), NOW + i * TIMING.pass_seconds)
        assert not result.acts, i
        state = result.state
    later = run(state, QUIET, observe(HOT, fast=fast), NOW + TIMING.early_steer_seconds)
    assert [s.kind for s in later.steps] == [OutcomeKind.REBALANCE] and "early steer" in later.steps[0].reason


def recovers_only_when_no_rebalance_alert_fires() -> None:
    steered = neutral(weights={"node1": 50, "node2": 125, "node3": 125}, last_weight_change=0.0)
    firing = run(steered, REBALANCING, observe(EVEN))
    assert OutcomeKind.RECOVER not in [s.kind for s in firing.steps]
    quiet = run(steered, QUIET, observe(EVEN))
    assert [s.kind for s in quiet.steps] == [OutcomeKind.RECOVER]


def held_while_the_spread_persists() -> None:
    steered = neutral(weights={"node1": 50, "node2": 125, "node3": 125}, last_weight_change=0.0)
    result = run(steered, QUIET, observe(HOT))
    assert [s.kind for s in result.steps] == [OutcomeKind.HOLD]
    assert result.state.weights == steered.weights


def sheds_one_level_per_interval() -> None:
    first = run(neutral(), SHEDDING, observe(HOT))
    assert first.state.shed_level == 1
    again = run(first.state, SHEDDING, observe(HOT), NOW + TIMING.step_seconds - 1)
    assert again.state.shed_level == 1
    later = run(first.state, SHEDDING, observe(HOT), NOW + TIMING.step_seconds)
    assert later.state.shed_level == 2


def shed_basis_has_a_floor() -> None:
    empty = Observation(samples={}, active_connections=0, cluster_connections=0)
    assert run(neutral(), SHEDDING, empty).state.shed_anchor == POLICY.shed_min_connections


def lifted_one_level_per_interval() -> None:
    shedding = neutral(shed_level=3, shed_anchor=500, last_shed_change=0.0)
    lifted = run(shedding, QUIET, observe(EVEN))
    assert lifted.state.shed_level == 2
    assert run(lifted.state, QUIET, observe(EVEN), NOW + 1).state.shed_level == 2


def down_nodes_take_no_part() -> None:
    result = run(neutral(), REBALANCING, observe(HOT, down=frozenset({"node1"})))
    assert result.state.weights["node1"] == POLICY.neutral_weight
    assert result.state.weights["node2"] != result.state.weights["node3"]  # the others are balanced


def evict(state: WebhookState, desired: Desired, observation: Observation, now: float) -> PassResult:
    return decide_pass(state, desired, observation, POLICY, TIMING, NODES, now, eviction=EVICTION)


def arms_after_the_weights_had_their_time() -> None:
    state = evict(neutral(), QUIET, observe(HOT), NOW).state  # imbalanced on the webhook's own observation
    assert state.evict_since == NOW and not state.evict_armed
    early = evict(state, QUIET, observe(HOT), NOW + EVICTION.after_seconds - 1)
    assert not early.state.evict_armed and not early.eviction.donors
    armed = evict(early.state, QUIET, observe(HOT), NOW + EVICTION.after_seconds)
    assert armed.state.evict_armed and [d.node for d in armed.eviction.donors] == ["node1"]
    assert "weights did not reduce the max squared deviation" in armed.state.evict_reason
    improving = {"node1": 0.75, "node2": 0.35, "node3": 0.3}  # max squared deviation down by more than min_improvement
    restarted = evict(early.state, QUIET, observe(improving), NOW + EVICTION.after_seconds)
    assert not restarted.state.evict_armed and restarted.state.evict_since == NOW + EVICTION.after_seconds


def favours_the_recipients_first() -> None:
    armed = evict(neutral(evict_armed=True, evict_reason="test"), QUIET, observe(HOT), NOW)
    (steer,) = [s for s in armed.steps if s.kind is OutcomeKind.REBALANCE]
    weights = armed.state.weights
    assert "weights favour the recipients first" in steer.reason
    assert weights["node1"] < min(weights["node2"], weights["node3"])
    unsteered = _intent(HOT, dict.fromkeys(NODES, POLICY.neutral_weight))
    assert not unsteered.donors and unsteered.waiting and "weights do not favour the recipients" in unsteered.waiting


def _intent(
    cpu: dict[str, float], weights: dict[str, int], last_eviction: dict[str, float] | None = None
) -> eviction_policy.EvictionIntent:
    """The armed lever's donors for ``cpu`` and ``weights`` (no evacuation) at NOW."""
    return eviction_policy.intent(
        eviction_policy.spread_of(cpu),
        cpu,
        weights,
        shares=new_connection_shares(weights, {}, POLICY),  # equal connection counts: shares follow the weights
        armed=True,
        reason="test",
        evacuating=(),
        last_eviction=last_eviction or {},
        cooldown_seconds=EVICTION.cooldown_seconds,
        params=EVICTION.params,
        now=NOW,
    )


def donors_only_above_the_mean_by_the_target() -> None:
    target = EVICTION.params.spread_target
    steered = {"node1": POLICY.min_weight, "node2": POLICY.max_weight, "node3": POLICY.max_weight}
    close = {"node1": 0.4 + 0.9 * target, "node2": 0.4, "node3": 0.4 - 0.9 * target}
    assert not _intent(close, steered).donors
    far = {"node1": 0.4 + 2 * target, "node2": 0.4 - target, "node3": 0.4 - target}
    assert [d.node for d in _intent(far, steered).donors] == ["node1"]


def _clients(rates: list[float], persistent: bool = False) -> list[ClientLoad]:
    return [ClientLoad(f"c{i}", rate, 10 * rate, persistent, 4, 60.0) for i, rate in enumerate(rates)]


def victims_add_up_to_the_surplus() -> None:
    # node at 0.9 with one heavy publisher (half its load) and 45 light ones; the surplus is 0.3
    clients = _clients([45.0] + [1.0] * 45)
    choice = eviction_policy.choose_victims(
        0.9, 0.3, clients, room=0.3, shared_sessions=False, params=EVICTION.params, batch_seconds=EVICTION.batch_seconds
    )
    assert "c0" not in choice.clients and choice.skipped_heavy == 1  # the heavy one would only move the hot spot
    assert 0 < choice.load <= 0.3 + 1e-9 and len(choice.clients) <= choice.bound


def persistent_sessions_stay() -> None:
    clients = _clients([1.0] * 10, persistent=True) + [ClientLoad("clean", 1.0, 10.0, False, 4, 60.0)]
    kept = eviction_policy.choose_victims(
        0.9, 0.5, clients, room=0.5, shared_sessions=False, params=EVICTION.params, batch_seconds=EVICTION.batch_seconds
    )
    assert kept.clients == ("clean",) and kept.skipped_persistent == 10
    assert not EVICTION.params.allow_persistent
    evacuated = eviction_policy.evacuation_victims(
        clients, shared_sessions=False, params=EVICTION.params, batch_seconds=EVICTION.batch_seconds
    )
    assert evacuated.clients == ("clean",)


def stops_inside_the_target() -> None:
    target = EVICTION.params.spread_target
    armed = eviction_policy.Episode(NOW, 0.2, True, "test")
    inside = eviction_policy.spread_of({"node1": 0.4 + 0.9 * target, "node2": 0.4, "node3": 0.4 - 0.9 * target})
    outside = eviction_policy.spread_of({"node1": 0.4 + 1.1 * target, "node2": 0.4, "node3": 0.4 - 1.1 * target})

    def after(spread: eviction_policy.Spread | None) -> eviction_policy.Episode:
        return eviction_policy.next_episode(
            armed, spread, imbalanced=False, requested=False, params=EVICTION.params, after_seconds=30.0, now=NOW
        )

    assert not after(inside).armed and after(outside).armed
    # a node below the mean alone (no donor) has nobody to take clients from: the lever stops too
    # (trial of 2026-12-01: 0.24/0.24/0.12 stayed armed, steering every step and blocking recovery)
    cold = eviction_policy.spread_of({"node1": 0.24, "node2": 0.24, "node3": 0.12})
    assert cold is not None and cold.max_abs_deviation > target and not after(cold).armed


def one_batch_per_node_per_step_interval() -> None:
    steered = {"node1": POLICY.min_weight, "node2": POLICY.max_weight, "node3": POLICY.max_weight}

    def donors(last: float) -> list[str]:
        return [d.node for d in _intent(HOT, steered, last_eviction={"node1": last}).donors]

    assert EVICTION.cooldown_seconds == TIMING.step_seconds
    assert donors(NOW - TIMING.step_seconds + 1) == [] and donors(NOW - TIMING.step_seconds) == ["node1"]
    bound = eviction_policy.batch_bound(1000, EVICTION.params, EVICTION.batch_seconds, evacuating=False)
    by_rate = int(EVICTION.params.max_per_second * TIMING.pass_seconds)
    assert bound == min(by_rate, int(1000 * EVICTION.params.max_fraction))


def evacuates_at_the_bounded_rate() -> None:
    clients = _clients([1.0] * 1000)
    batch = eviction_policy.evacuation_victims(
        clients, shared_sessions=False, params=EVICTION.params, batch_seconds=EVICTION.batch_seconds
    )
    assert len(batch.clients) == int(EVICTION.params.max_per_second * TIMING.pass_seconds)


def pages_never_go_through_the_webhook() -> None:
    config = alertmanager_config.build(PARAMS, "http://webhook:9643/alerts", "/token")
    routes = {r["matchers"][0]: r["receiver"] for r in config["route"]["routes"]}
    assert routes[f'action="{contract.Action.PAGE.value}"'] == contract.RECEIVER_PAGE
    page = {r["name"]: r for r in config["receivers"]}[contract.RECEIVER_PAGE]
    assert "webhook:9643" not in yaml.safe_dump(page)


# Who says it: one load alert, the two steering alerts, the alerts that treat a node as down, those that page.
HIGH, IMBALANCED, CRITICAL = (contract.ALERT_CPU_HIGH,), (contract.ALERT_IMBALANCED,), (contract.ALERT_CPU_CRITICAL,)
STEERING = HIGH + IMBALANCED
DOWN = (contract.ALERT_BROKER_DOWN, contract.ALERT_ENDPOINT_UNHEALTHY)
PAGING = (contract.ALERT_BROKER_DOWN, contract.ALERT_EXPORTER_DOWN, contract.ALERT_REBALANCER_FAILING)

# Each claim once: the phrase (white space does not matter), its check and the runbooks that state it.
STATED: list[tuple[str, Callable[[], None], tuple[str, ...]]] = [
    ("at most one step per step interval", one_step_per_interval, STEERING),
    ("steers early", steers_early, HIGH),
    ("only when no rebalance alert of the cluster fires", recovers_only_when_no_rebalance_alert_fires, STEERING),
    ("**held** while the CPU spread persists", held_while_the_spread_persists, STEERING),
    ("take no part", down_nodes_take_no_part, IMBALANCED),
    ("**arms the evict lever**", arms_after_the_weights_had_their_time, STEERING),
    ("**weights favour the recipients first**", favours_the_recipients_first, IMBALANCED),
    ("**above the mean by more than `eviction.spread_target`**", donors_only_above_the_mean_by_the_target, IMBALANCED),
    ("**adds up to at most the donor's surplus**", victims_add_up_to_the_surplus, STEERING),
    ("**one batch per node per step interval**", one_batch_per_node_per_step_interval, STEERING),
    ("**persistent sessions stay**", persistent_sessions_stay, STEERING),
    ("**stops when no node is above the mean by more than `eviction.spread_target`**", stops_inside_the_target,
     IMBALANCED),
    ("**evicts every evictable client at the bounded rate**", evacuates_at_the_bounded_rate, HIGH),
    ("one level per step interval", sheds_one_level_per_interval, CRITICAL),
    ("never taken below `policy.shed_min_connections`", shed_basis_has_a_floor, CRITICAL),
    ("lifted one level per step interval", lifted_one_level_per_interval, CRITICAL),
    ("**never goes through the webhook**", pages_never_go_through_the_webhook, PAGING),
    ("treats the node as **down**", down_nodes_take_no_part, DOWN),
]
CLAIMS = [(runbook, phrase, check) for phrase, check, runbooks in STATED for runbook in runbooks]

# Behaviour that no longer exists: notifications as commands, the /page route, recovery ticks.
RETIRED = [
    "POST /page",
    "per firing notification",
    "recovery ticks",
    "return to neutral stepwise",
    "answers\nAlertmanager with 503",
    "so a bounded number of clients reconnect",  # a drain closes no connection; the evict lever moves them
    "consider a\nbounded drain",
    "slow start keeps the reconnect storm",  # slow start is off by default (slow_start_window: 0s)
    "get traffic through slow start",
]


def _section(name: str) -> str:
    text = (RUNBOOKS / f"{name}.md").read_text()
    return text.split("## What mqttlb does", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(("runbook", "phrase", "check"), CLAIMS, ids=[f"{r}:{c.__name__}" for r, _, c in CLAIMS])
def test_runbook_claim_holds(runbook: str, phrase: str, check: Callable[[], None]) -> None:
    section = " ".join(_section(runbook).split())
    assert " ".join(phrase.split()) in section, f"{runbook}.md no longer says {phrase!r}"
    check()


def test_every_alert_has_a_runbook_with_a_what_mqttlb_does_section() -> None:
    for name in contract.ALERT_NAMES:
        assert _section(name).strip(), name


@pytest.mark.parametrize("phrase", RETIRED)
def test_no_runbook_describes_retired_behaviour(phrase: str) -> None:
    for path in sorted(RUNBOOKS.glob("*.md")):
        assert " ".join(phrase.split()) not in " ".join(path.read_text().split()), f"{path.name}: {phrase!r}"


# --------------------------------------------------------------------------- commands a runbook gives

LOCAL_SUPERVISORCTL = ".venv/bin/supervisorctl -c .stack/supervisord.conf"
GUARDED_PORTS = {"9641", "9642", "9643"}  # the exporters' /metrics and the webhook: bearer token
OPEN_PATHS = ("/healthz", "/readyz", "/runbooks/")


def _runbook_texts() -> dict[str, str]:
    return {path.name: " ".join(path.read_text().split()) for path in sorted(RUNBOOKS.glob("*.md"))}


def _local_stack(broker: str, tmp_path: Path) -> tuple[list[str], set[str]]:
    """The local stack's supervisord programs and its state files and folders, relative to `.stack/`."""
    from collections import defaultdict

    from mqttlb.stack.config import load_stack_config
    from mqttlb.stack.render import programs
    from mqttlb.stack.topology import native_topology

    cfg = load_stack_config(env={}, overrides={"broker": broker, "state_dir": str(tmp_path / ".stack")})
    topo = native_topology(cfg)
    names = [p.name for p in programs(topo, defaultdict(lambda: "/bin/true"))]
    root = topo.state.root
    paths: set[str] = set()
    for name in dir(topo.state):
        value = getattr(topo.state, name, None)
        if isinstance(value, Path) and value.is_relative_to(root) and value != root:
            relative = value.relative_to(root)
            paths.update(str(part) for part in [relative, *relative.parents] if str(part) != ".")
    return names, paths


def test_every_supervisorctl_line_works_on_the_local_stack(tmp_path: Path) -> None:
    """Trial: `supervisorctl status` fails without `-c .stack/supervisord.conf` (no TCP port, its own socket)."""
    programs = set()
    for broker in ("mosquitto", "hivemq"):
        programs.update(_local_stack(broker, tmp_path / broker)[0])
    calls = [(name, m) for name, text in _runbook_texts().items() for m in re.findall(r"supervisorctl[^`]*", text)]
    assert calls
    for name, call in calls:
        assert f".venv/bin/{call}".startswith(LOCAL_SUPERVISORCTL + " "), (name, call)
        verb, *args = call.removeprefix(LOCAL_SUPERVISORCTL.removeprefix(".venv/bin/")).split()
        named = args[1:] if verb == "signal" else args
        assert verb in {"status", "restart", "start", "stop", "signal"} and set(named) <= programs, (name, call)


def test_every_local_stack_path_exists_in_the_stack_layout(tmp_path: Path) -> None:
    _, paths = _local_stack("mosquitto", tmp_path)
    for name, text in _runbook_texts().items():
        for mentioned in re.findall(r"\.stack/([A-Za-z0-9_./-]*[A-Za-z0-9_])", text):
            assert mentioned in paths, (name, mentioned, sorted(paths))


def test_every_curl_to_a_guarded_route_carries_its_credential() -> None:
    """Trial: MqttExporterDown's `curl http://<exporter>/metrics` got a 401."""
    for name, text in _runbook_texts().items():
        calls = [part.split("`", 1)[0] for part in re.split(r"(?=\bcurl )", text) if part.startswith("curl ")]
        for call in calls:
            for url in re.findall(r"https?://[^ `]+", call):
                port = re.match(r"https?://[^/:]+:(\d+)", url)
                guarded = port is not None and port[1] in GUARDED_PORTS and not url.endswith(OPEN_PATHS)
                assert not guarded or "Authorization: Bearer $(cat .stack/" in call, (name, call)
        assert "<exporter>/metrics` by hand" not in text, name


def test_slow_start_is_described_as_off_by_default_with_least_request(tmp_path: Path) -> None:
    """What a returning or new node gets depends on the stack file's defaults: no slow start, least request."""
    from mqttlb.stack.config import NO_SLOW_START, load_stack_config

    cfg = load_stack_config(env={}, overrides={"state_dir": str(tmp_path)})
    assert (cfg.slow_start_window, cfg.lb_policy) == (NO_SLOW_START, "LEAST_REQUEST")
    texts = _runbook_texts()
    for name in (f"{contract.ALERT_BROKER_DOWN}.md", f"{contract.ALERT_CPU_CRITICAL}.md"):
        said = texts[name]
        assert "slow start is **off** by default" in said or "slow start is off by default" in said, name
        assert "`slow_start_window: 0s`" in said and "least request (the default `lb_policy`)" in said, name
