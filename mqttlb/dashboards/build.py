"""Turn the dashboard sources into JSON text, write it, and detect drift of the committed files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grafanalib.core as G
from grafanalib._gen import DashboardEncoder

from mqttlb.atomic import atomic_write_text
from mqttlb.dashboards import cluster_balance, connections, rebalancer
from mqttlb.dashboards.common import requires
from mqttlb.drift import Drift, find_drift
from mqttlb.params import Params
from mqttlb.shipped import DASHBOARDS, shipped

GENERATED_DIR = shipped(DASHBOARDS)  # the committed / shipped copies (read-only)
DEFAULT_OUT = Path(DASHBOARDS)  # where `mqttlb dashboards generate` writes, relative to the cwd

BUILDERS: tuple[Callable[[Params], G.Dashboard], ...] = (
    cluster_balance.build,
    connections.build,
    rebalancer.build,
)


def to_json_text(dashboard: G.Dashboard) -> str:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline; with ``__requires``."""
    data = json.loads(json.dumps(dashboard.to_json_data(), cls=DashboardEncoder))
    data["__requires"] = requires(data)
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_dashboards(params: Params) -> dict[str, str]:
    """File name (``<uid>.json``) -> JSON text for every dashboard."""
    files: dict[str, str] = {}
    for build in BUILDERS:
        dashboard = build(params)
        if not dashboard.uid:
            raise ValueError(f"dashboard {dashboard.title!r} has no uid")
        name = f"{dashboard.uid}.json"
        if name in files:
            raise ValueError(f"two dashboards share the uid {dashboard.uid!r}")
        files[name] = to_json_text(dashboard)
    return files


def write_all(params: Params, out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Write every dashboard; files whose content is unchanged are left untouched."""
    written = []
    for name, text in render_dashboards(params).items():
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            written.append(path)
    return written


def drift(params: Params, out_dir: Path = GENERATED_DIR) -> list[Drift]:
    """Generated files in ``out_dir`` that are missing or differ from their source, and ``*.json``
    files there that no source generates (Grafana would still provision them)."""
    expected = {out_dir / name: text for name, text in render_dashboards(params).items()}
    return find_drift(expected, generated_dirs=[(out_dir, "*.json")])
