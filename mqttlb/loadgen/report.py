"""The result of one load generator run: counters, rates, delivery accounting and latency."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mqttlb.atomic import atomic_write_text
from mqttlb.commandline import plural


@dataclass
class Report:
    workload: str
    seed: int
    elapsed_s: float
    clients: int
    connect_attempts: int
    connects_ok: int
    connect_failures: dict[str, int]
    unexpected_disconnects: int
    peak_connected: int
    published: dict[str, int]  # by qos ("0", "1")
    publish_refused: int  # the client's own queue was full (generator could not keep up)
    received: int  # all receipts, echo and subscribers
    qos1: dict[str, int]  # acked, received_unique, lost, duplicates, received_without_ack, streams
    latency_ms: dict[str, float | None]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    connects_by_second: list[int] = field(default_factory=list)  # successful connects in second i of the run
    stopped_early: bool = False
    latency_state: dict[str, Any] | None = field(default=None, repr=False)  # for merging shards

    @property
    def connect_failures_total(self) -> int:
        return sum(self.connect_failures.values())

    @property
    def publish_rate(self) -> float:
        return sum(self.published.values()) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def receive_rate(self) -> float:
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def connect_rate(self) -> float:
        return self.connects_ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("latency_state")
        data["connect_failures_total"] = self.connect_failures_total
        data["publish_rate"] = round(self.publish_rate, 2)
        data["receive_rate"] = round(self.receive_rate, 2)
        data["connect_rate"] = round(self.connect_rate, 2)
        return data

    def write_json(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def to_text(self) -> str:
        lat = self.latency_ms
        q = self.qos1
        failures = ", ".join(f"{k}={v}" for k, v in sorted(self.connect_failures.items())) or "none"
        return "\n".join(
            [
                f"workload: {self.workload}",
                f"elapsed {self.elapsed_s:.1f} s{' (stopped early)' if self.stopped_early else ''}, "
                f"seed {self.seed}, {plural(self.clients, 'client')}",
                f"connections: {self.connects_ok} ok of {self.connect_attempts} attempts "
                f"({self.connect_rate:.1f} ok/s over the run), peak {self.peak_connected} concurrent, "
                f"failures {self.connect_failures_total} ({failures}), "
                f"unexpected disconnects {self.unexpected_disconnects}",
                f"published: qos0 {self.published.get('0', 0)}, qos1 {self.published.get('1', 0)} "
                f"({self.publish_rate:.1f} msg/s), refused by full client queue {self.publish_refused}",
                f"received: {self.received} ({self.receive_rate:.1f} msg/s)",
                f"qos1 delivery check: acked {q.get('acked', 0)}, received {q.get('received_unique', 0)}, "
                f"lost {q.get('lost', 0)}, duplicates {q.get('duplicates', 0)}, "
                f"received without ack {q.get('received_without_ack', 0)}",
                "latency ms: none measured (no message came back to a subscriber)" if not lat.get("count") else
                f"latency ms: p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} "
                f"max {lat.get('max')} (n={lat.get('count')})",
            ]
        )
