"""MQTT load generator (heterogeneous clients, churn, delivery check) and the policy experiment harness.

Python API: ``await loadgen.run(workload) -> Report`` with a ``Workload`` built by
``mqttlb.loadgen.workload.build_workload`` / ``parse_profile`` / ``load_workload_yaml``;
``mqttlb.loadgen.hot`` makes one broker hot without Envoy.
"""

from mqttlb.loadgen.engine import run
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.workload import (
    Churn,
    Profile,
    Workload,
    WorkloadError,
    build_workload,
    load_workload_yaml,
    parse_profile,
)

__all__ = [
    "Churn",
    "Profile",
    "Report",
    "Workload",
    "WorkloadError",
    "build_workload",
    "load_workload_yaml",
    "parse_profile",
    "run",
]
