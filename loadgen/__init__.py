"""MQTT load generator (heterogeneous clients, churn, delivery check) and the policy experiment harness.

Python API: ``await loadgen.run(workload) -> Report`` with a ``Workload`` built by
``loadgen.workload.build_workload`` / ``parse_profile`` / ``load_workload_yaml``; ``loadgen.hot`` makes
one broker hot without Envoy.
"""

from loadgen.engine import run
from loadgen.report import Report
from loadgen.workload import (
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
