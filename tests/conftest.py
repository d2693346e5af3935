from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import sigterm_stops  # noqa: E402
from stackutil import free_ports_config, running_stack  # noqa: E402

from mqttlb.stack.ephemeral import FAST_PARAMS  # noqa: E402
from mqttlb.stack.runner import Stack  # noqa: E402

# The venv's bin holds envoy and supervisord; make sure subprocesses find them.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# The hot load of the shared stack's tests connects straight to a node, not through Envoy: the evict
# lever would only disconnect it.  The eviction tests start stacks of their own with it on.
LIVE_PARAMS = {**FAST_PARAMS, "eviction": {"enabled": False}}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(sigterm_stops, "mqttlb-sigterm-stops")  # SIGTERM tears the fixtures down


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole stack (3 nodes) on free ports, shared by the live tests of one session."""
    state = tmp_path_factory.mktemp("live-stack")
    cfg = free_ports_config(state, nodes=3, params=LIVE_PARAMS, scrape_interval="2s", node_cpu_cores=0.25)
    with running_stack(cfg) as stack:
        yield stack
