"""Lint, render and validate the Helm chart (deploy/helm/mqttlb) with a real ``helm``.

``helm`` is built from the Go module proxy (``make helm``: ``go install helm.sh/helm/v3/cmd/helm@v3.22.0``
into the virtualenv's bin/).  Rendering names the Kubernetes version whose schemas the objects are then
checked against (:data:`mqttlb.deploy.k8s_schemas.KUBERNETES_VERSION`), so ``helm template`` and the
validation agree on one cluster version.

    python -m mqttlb.deploy.chart      # helm lint + helm template with each ci/*-values.yaml, then every
                                       # rendered object against the schemas; exit 1 naming each problem
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mqttlb.commandline import parse_args, refuse
from mqttlb.deploy.helm_render import CHART_DIR
from mqttlb.deploy.k8s_schemas import KUBERNETES_VERSION, SchemaError, default_store, load_manifests
from mqttlb.logs import add_log_flags

log = logging.getLogger(__name__)

HELM_VERSION = "v3.22.0"
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
RELEASE = "mqttlb"
NAMESPACE = "mqtt"


class HelmError(RuntimeError):
    """helm is missing, or refused the chart: the message has helm's own output."""


def helm_binary() -> str:
    """``helm`` on PATH, else the virtualenv's (next to this Python); HelmError naming the fix otherwise."""
    found = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))
    if found is None:
        raise HelmError(f"helm is not installed: `make helm` builds it (go install {HELM_MODULE}@{HELM_VERSION})")
    return found


def _helm(*args: str) -> str:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise HelmError(f"helm {args[0]}: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def helm_version() -> str:
    """The helm binary's version, e.g. ``v3.22.0`` (``make helm`` builds :data:`HELM_VERSION`)."""
    return _helm("version", "--template", "{{ .Version }}").strip()


def _values_args(values: list[Path], settings: dict[str, str] | None) -> list[str]:
    args = [item for path in values for item in ("--values", str(path))]
    for key, value in (settings or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def lint(values: list[Path], settings: dict[str, str] | None = None) -> str:
    """``helm lint --strict`` of the chart with ``values`` files and ``--set`` ``settings``; its output."""
    return _helm(
        "lint", "--strict", "--kube-version", KUBERNETES_VERSION, str(CHART_DIR), *_values_args(values, settings)
    )


def template(values: list[Path], settings: dict[str, str] | None = None, chart_dir: Path = CHART_DIR) -> str:
    """``helm template`` of release :data:`RELEASE` in namespace :data:`NAMESPACE`: the manifests' text.
    ``chart_dir``: another copy of the chart (``helm_render --out``)."""
    return _helm(
        "template",
        RELEASE,
        str(chart_dir),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBERNETES_VERSION,
        *_values_args(values, settings),
    )


def objects(manifests: str) -> list[dict[str, Any]]:
    """The objects of ``helm template``'s output."""
    return list(load_manifests(manifests))


def check(values_files: list[Path]) -> list[str]:
    """Lint and render the chart with each values file, validate every object; one line per problem."""
    store = default_store()
    problems: list[str] = []
    for values in values_files:
        try:
            lint([values])
            rendered = objects(template([values]))
        except HelmError as exc:
            problems.append(f"{values.name}: {exc}")
            continue
        for obj in rendered:
            problems += [f"{values.name}: {problem}" for problem in store.problems(obj)]
        log.info("%s: helm lint and template pass, %d objects checked", values.name, len(rendered))
    return problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mqttlb.deploy.chart",
        description="helm lint and helm template deploy/helm/mqttlb with each ci/*-values.yaml and validate every "
        "rendered object against the Kubernetes and prometheus-operator schemas.",
    )
    add_log_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parse_args(_parser(), argv)
    try:
        problems = check(CI_VALUES)
    except (HelmError, SchemaError) as exc:
        return refuse(exc)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
