"""HTTP layer: validate, authenticate, record desired state, answer.  Never waits on Envoy or Prometheus.

Routes:
- ``POST /alerts`` (Alertmanager, bearer token): the notification's alerts update the firing set and
  wake the reconcile loop; the answer says what changed in the set.
- ``POST /drain`` (operator, bearer token): ``{"node": str, "draining": bool}`` becomes the desired
  drain state of that node; the next pass publishes it (202).
- ``POST /v3/discovery:endpoints``: REST-JSON EDS, from the current immutable snapshot.
- ``GET /status``: the controller's state, the firing set and the published snapshot, as JSON.
- ``GET /metrics``, ``/healthz``, ``/readyz``, and ``GET /`` (a short page for people).

Bad input gets a 4xx with a short JSON error, is counted in ``WEBHOOK_REJECTED`` and changes nothing.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import RequestEntityTooLarge

from mqttlb.webhook.controller import Controller
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.firing import FiringInputError
from mqttlb.webhook.payload import PayloadError, parse_notification

log = logging.getLogger(__name__)

MAX_DISCOVERY_NAMES = 100


class BodyTooLarge(Exception):
    pass


def _read_body(limit: int) -> bytes:
    """Read at most ``limit`` bytes; works for chunked bodies, which carry no Content-Length."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    try:
        body = request.stream.read(limit + 1)
    except RequestEntityTooLarge as exc:
        raise BodyTooLarge() from exc
    if len(body) > limit:
        raise BodyTooLarge()
    return body


def _loads(body: bytes) -> Any:
    """JSON or ValueError (deep nesting included, which json reports as RecursionError)."""
    try:
        return json.loads(body or b"{}")
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _resource_names(document: dict[str, Any]) -> list[str]:
    names = document.get("resource_names", document.get("resourceNames", []))
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("resource_names must be a list of strings")
    if len(names) > MAX_DISCOVERY_NAMES:
        raise ValueError(f"more than {MAX_DISCOVERY_NAMES} resource_names")
    return names


HOME_PAGE = """<!doctype html><title>mqttlb rebalancer</title>
<h1>mqttlb rebalancer</h1>
<p>Cluster <b>{cluster}</b>{dry}. EDS snapshot version {version}; shed level {shed}.</p>
<ul>
<li><a href="status">/status</a>: weights decided and published, draining, shedding, firing alerts (JSON)</li>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li>POST /alerts: Alertmanager's webhook (bearer token); POST /drain: {{"node", "draining"}} (bearer token)</li>
</ul>
<p>From a shell: <code>mqttlb status</code>.</p>
"""


def create_app(controller: Controller, token: str, max_body_bytes: int) -> Flask:
    """The Flask app over a started ``controller``; ``token`` is the bearer token of the POST routes."""
    app = Flask(__name__)
    # one byte more than allowed: werkzeug truncates a chunked body at the limit silently, so the
    # extra byte is what tells "exactly the limit" from "too large" in _read_body
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes + 1
    expected = token.encode()
    metrics = controller.metrics
    firing = controller.firing
    app.extensions["controller"] = controller

    def reject(route: str, status: int, reason: str, message: str) -> tuple[Response, int]:
        metrics.rejected.labels(route, reason).inc()
        log.warning(
            "rejected %s %s from %s: %s (%d)", request.method, request.path, request.remote_addr, message, status
        )
        return jsonify({"error": message}), status

    def authorised() -> bool:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected)

    def guarded_body(route: str) -> bytes | tuple[Response, int]:
        if not authorised():
            return reject(route, 401, "unauthorised", "missing or wrong bearer token")
        try:
            return _read_body(max_body_bytes)
        except BodyTooLarge:
            return reject(route, 413, "too_large", f"body larger than {max_body_bytes} bytes")

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> tuple[Response, int]:
        route = {"/alerts": "alerts", "/drain": "drain"}.get(request.path, "eds")
        return reject(route, 413, "too_large", f"body larger than {max_body_bytes} bytes")

    @app.post("/alerts")
    def alerts() -> Any:
        body = guarded_body("alerts")
        if not isinstance(body, bytes):
            return body
        try:
            notification = parse_notification(body)
            notification.actions()
            result = firing.apply(notification.alerts, controller.clock())
        except PayloadError as exc:
            reason = "invalid_payload" if exc.status == 400 else "unknown_action"
            return reject("alerts", exc.status, reason, str(exc))
        except FiringInputError as exc:
            return reject("alerts", 400, "invalid_payload", str(exc)[:300])
        if result.changed:
            controller.wake()
        log.info(
            "notification %s %s: %s",
            notification.status,
            notification.alert_names(),
            "firing set changed" if result.changed else "no change (duplicate or stale)",
        )
        return jsonify({"result": "changed" if result.changed else "unchanged", **result.as_json()})

    @app.post("/drain")
    def drain() -> Any:
        body = guarded_body("drain")
        if not isinstance(body, bytes):
            return body
        try:
            document = _loads(body)
            node, draining = document["node"], document["draining"]
            if not isinstance(node, str) or not isinstance(draining, bool):
                raise TypeError("node must be a string and draining a boolean")
        except (ValueError, KeyError, TypeError) as exc:
            return reject("drain", 400, "invalid_payload", f"expected {{node: str, draining: bool}}: {str(exc)[:200]}")
        try:
            controller.request_drain(node, draining)
        except KeyError:
            return reject("drain", 404, "invalid_payload", f"unknown node {node[:100]!r}")
        return jsonify({"result": "accepted", "node": node, "draining": draining}), 202

    @app.post("/v3/discovery:endpoints")
    def discovery_endpoints() -> Any:
        try:
            document = _loads(_read_body(max_body_bytes))  # Envoy sends its node, extensions included
            if not isinstance(document, dict):
                raise ValueError("DiscoveryRequest must be a JSON object")
            type_url = document.get("type_url") or document.get("typeUrl") or CLA_TYPE
            if type_url != CLA_TYPE:
                raise ValueError(f"unsupported type_url {str(type_url)[:200]!r}")
            names = _resource_names(document)
        except BodyTooLarge:
            return reject("eds", 413, "too_large", "DiscoveryRequest too large")
        except ValueError as exc:
            return reject("eds", 400, "invalid_payload", f"invalid DiscoveryRequest: {str(exc)[:200]}")
        snapshot = controller.snapshot
        if snapshot is None:
            return jsonify({"error": "no snapshot published yet"}), 503
        if names and snapshot.cluster not in names:
            return jsonify({**snapshot.discovery(), "resources": []})
        return Response(snapshot.discovery_json, mimetype="application/json")

    @app.get("/status")
    def status() -> Any:
        return jsonify(controller.status())

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        if controller.ready:
            return jsonify({"ready": True, "eds_version": controller.state.version})
        return jsonify({"ready": False}), 503

    @app.get("/")
    def home() -> Response:
        snapshot = controller.snapshot
        page = HOME_PAGE.format(
            cluster=html.escape(controller.config.cluster),
            dry=" (dry run: decides and logs, does not act)" if controller.config.dry_run else "",
            version=snapshot.version if snapshot else "-",
            shed=controller.state.shed_level,
        )
        return Response(page, mimetype="text/html")

    return app
