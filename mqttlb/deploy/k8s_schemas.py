"""Validate Kubernetes objects against the API's own schemas, offline but for the Go module proxy.

Schemas come from two Go modules, downloaded (once, into the Go module cache) with ``go mod download``:

* ``k8s.io/kubernetes`` (:data:`KUBERNETES_VERSION`): ``api/openapi-spec/v3/*.json``, the OpenAPI v3
  documents the API server publishes, one per group version; an object's schema is the component whose
  ``x-kubernetes-group-version-kind`` names its apiVersion and kind.
* ``github.com/prometheus-operator/prometheus-operator`` (:data:`OPERATOR_VERSION`):
  ``example/prometheus-operator-crd/*.yaml``, the CustomResourceDefinitions; an object's schema is the
  ``openAPIV3Schema`` of its version, with ``metadata`` checked as Kubernetes' ObjectMeta.

Validation is strict, as ``kubeconform -strict``: an object schema that lists its properties and neither
sets ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` refuses any other key, so a
misspelt field is an error rather than silently dropped by the API server.  Schemas are JSON Schema
draft 4 for the validator (OpenAPI 3.0's dialect); the ``x-kubernetes-*`` extensions are not checked.

    python -m mqttlb.deploy.k8s_schemas FILE...     # every object of each multi-document YAML FILE
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mqttlb.commandline import parse_args, refuse
from mqttlb.logs import add_log_flags

log = logging.getLogger(__name__)

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.34.4"
OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
OPERATOR_VERSION = "v0.85.0"
OPENAPI_DIR = "api/openapi-spec/v3"
CRD_DIR = "example/prometheus-operator-crd"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
GO_FALLBACK = Path("/usr/local/go/bin/go")
ALERTMANAGER_CONFIG = "AlertmanagerConfig"


class SchemaError(RuntimeError):
    """A schema source cannot be had (go missing, the module refused) or names no such kind."""


def go_binary() -> str:
    """``go`` on PATH, else /usr/local/go/bin/go; SchemaError when neither exists."""
    found = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.is_file() else None)
    if found is None:
        raise SchemaError("the go command is needed to fetch the schema modules (not on PATH, not in /usr/local/go)")
    return found


def module_dir(module: str, version: str) -> Path:
    """The extracted source of ``module@version`` in the Go module cache, downloading it when missing.
    Raises SchemaError with go's own reason (e.g. the proxy's 403) when the module cannot be had."""
    result = subprocess.run(
        [go_binary(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",  # outside any module: download only
    )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SchemaError(f"go mod download {module}@{version}: {result.stderr.strip()[:400]}") from None
    if "Error" in info or result.returncode != 0:
        raise SchemaError(f"go mod download {module}@{version}: {info.get('Error', result.stderr.strip())[:400]}")
    return Path(info["Dir"])


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which every object schema with ``properties`` and no
    ``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields`` refuses other keys."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        isinstance(schema.get("properties"), dict)
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading a bare ``=`` as the string Go's YAML (kubectl's, Helm's) reads."""


def _plain_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


ManifestLoader.add_constructor("tag:yaml.org,2002:value", _plain_string)


@dataclass(frozen=True)
class SchemaViolation:
    """One object that does not validate: which, where in it, and why."""

    obj: str  # "Kind/name (apiVersion)"
    path: str  # JSON path in the object, e.g. spec.template.spec.containers[0].ports[0]
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.path or '(root)'}: {self.message}"


class SchemaStore:
    """Validators per (apiVersion, kind) from the two modules' schema files (see the module docstring)."""

    def __init__(self, kubernetes_dir: Path, operator_dir: Path) -> None:
        self.openapi = kubernetes_dir / OPENAPI_DIR
        self.crds = operator_dir / CRD_DIR
        if not self.openapi.is_dir():
            raise SchemaError(f"{self.openapi}: no OpenAPI v3 documents there")
        if not self.crds.is_dir():
            raise SchemaError(f"{self.crds}: no CustomResourceDefinitions there")
        self._validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}

    @classmethod
    def from_go_modules(cls) -> SchemaStore:
        """The store for :data:`KUBERNETES_VERSION` and :data:`OPERATOR_VERSION` (``go mod download``)."""
        return cls(module_dir(KUBERNETES_MODULE, KUBERNETES_VERSION), module_dir(OPERATOR_MODULE, OPERATOR_VERSION))

    def _openapi_doc(self, group: str, version: str) -> dict[str, Any]:
        name = f"api__{version}_openapi.json" if not group else f"apis__{group}__{version}_openapi.json"
        path = self.openapi / name
        if not path.is_file():
            raise SchemaError(f"Kubernetes {KUBERNETES_VERSION} has no API group version {group or 'core'}/{version}")
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _crd_schema(self, group: str, version: str, kind: str) -> dict[str, Any] | None:
        for path in sorted(self.crds.glob("*.yaml")):
            crd = yaml.load(path.read_text(), Loader=ManifestLoader)  # noqa: S506 -- a SafeLoader subclass
            spec = crd.get("spec", {})
            if spec.get("group") != group or spec.get("names", {}).get("kind") != kind:
                continue
            for entry in spec.get("versions", []):
                if entry.get("name") == version:
                    schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
                    return schema
            served = [entry.get("name") for entry in spec.get("versions", [])]
            raise SchemaError(f"{path.name}: {kind} has versions {served}, not {version}")
        return None

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        """The validator of ``kind`` in ``api_version``; SchemaError when neither source knows it."""
        key = (api_version, kind)
        if key in self._validators:
            return self._validators[key]
        group, version = _group_version(api_version)
        core = self._openapi_doc("", "v1")
        crd = self._crd_schema(group, version, kind) if group.endswith("monitoring.coreos.com") else None
        if crd is not None:
            root = copy.deepcopy(crd)
            root.setdefault("properties", {})["metadata"] = {"$ref": f"#/components/schemas/{OBJECT_META}"}
            root = strict(root)
            root["components"] = strict(core["components"])
        else:
            doc = self._openapi_doc(group, version)
            names = [
                name
                for name, schema in doc["components"]["schemas"].items()
                if {"group": group, "version": version, "kind": kind}
                in schema.get("x-kubernetes-group-version-kind", [])
            ]
            if not names:
                raise SchemaError(f"Kubernetes {KUBERNETES_VERSION} has no kind {kind} in {api_version}")
            root = {"$ref": f"#/components/schemas/{names[0]}", "components": strict(doc["components"])}
        validator = jsonschema.Draft4Validator(root)
        self._validators[key] = validator
        return validator

    def problems(self, obj: dict[str, Any]) -> list[SchemaViolation]:
        """Every schema violation of one object (empty: valid)."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        name = (obj.get("metadata") or {}).get("name", "?")
        label = f"{kind}/{name} ({api_version})"
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return [SchemaViolation(label, "", "apiVersion and kind must be strings")]
        validator = self.validator(api_version, kind)
        found = [(list(e.absolute_path), e.message) for e in validator.iter_errors(obj)]
        if kind == ALERTMANAGER_CONFIG:
            found += _child_route_errors(validator.schema, obj)
        found.sort(key=lambda item: [str(part) for part in item[0]])
        return [SchemaViolation(label, _json_path(path), message[:300]) for path, message in found]


def _child_route_errors(root: dict[str, Any], obj: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """AlertmanagerConfig's child routes: the CRD keeps them as raw JSON (preserve-unknown-fields) and the
    operator parses each as a ``Route``; checked here against the CRD's own schema of ``spec.route``."""
    route_schema = root["properties"]["spec"]["properties"]["route"]
    validator = jsonschema.Draft4Validator({**route_schema, "components": root.get("components", {})})
    found: list[tuple[list[Any], str]] = []

    def walk(route: Any, path: list[Any]) -> None:
        if not isinstance(route, dict):
            return
        for index, child in enumerate(route.get("routes") or []):
            where = [*path, "routes", index]
            found.extend(([*where, *e.absolute_path], e.message) for e in validator.iter_errors(child))
            walk(child, where)

    walk((obj.get("spec") or {}).get("route"), ["spec", "route"])
    return found


def _json_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def load_manifests(text: str) -> Iterator[dict[str, Any]]:
    """The objects of a multi-document YAML stream (``helm template``'s output); empty documents skipped."""
    for document in yaml.load_all(text, Loader=ManifestLoader):  # noqa: S506 -- a SafeLoader subclass
        if document:
            yield document


@cache
def default_store() -> SchemaStore:
    """One store per process (the schema files are parsed once)."""
    return SchemaStore.from_go_modules()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mqttlb.deploy.k8s_schemas",
        description=f"Validate every object of multi-document YAML files against Kubernetes {KUBERNETES_VERSION}'s "
        f"OpenAPI schemas and prometheus-operator {OPERATOR_VERSION}'s CRDs (strict: unknown fields are errors).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add_log_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(_parser(), argv)
    try:
        store = default_store()
        found = 0
        count = 0
        for path in args.files:
            for obj in load_manifests(path.read_text()):
                count += 1
                for problem in store.problems(obj):
                    found += 1
                    print(f"{path}: {problem}", file=sys.stderr)
    except (SchemaError, OSError, yaml.YAMLError) as exc:
        return refuse(exc)
    log.info("%d objects checked, %d problems", count, found)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
