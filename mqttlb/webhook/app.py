"""Flask layer: validate, authenticate, de-duplicate (in the rebalancer), delegate.

Routes: POST /alerts (Alertmanager, bearer token), POST /page (page alerts, bearer token),
POST /drain (operator, bearer token), POST /v3/discovery:endpoints (REST-JSON EDS),
GET /metrics, /healthz, /readyz.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import RequestEntityTooLarge

from mqttlb.webhook.config import WebhookConfig, load_token
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.payload import PayloadError, parse_notification
from mqttlb.webhook.rebalancer import Rebalancer

log = logging.getLogger(__name__)


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


def create_app(
    config: WebhookConfig,
    *,
    rebalancer: Rebalancer | None = None,
    token: str | None = None,
    start: bool = True,
) -> Flask:
    app = Flask(__name__)
    # one byte more than allowed: werkzeug truncates a chunked body at the limit silently, so the
    # extra byte is what tells "exactly the limit" from "too large" in _read_body
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes + 1
    expected = (token if token is not None else load_token(config)).encode()
    rb = rebalancer or Rebalancer(config)
    if start:
        rb.start()
    app.extensions["rebalancer"] = rb
    metrics = rb.metrics

    def reject(kind: str, status: int, reason: str, message: str) -> tuple[Response, int]:
        metrics.rejected.labels(kind, reason).inc()
        log.warning(
            "rejected %s %s from %s: %s (%d)",
            request.method,
            request.path,
            request.remote_addr,
            message,
            status,
        )
        return jsonify({"error": message}), status

    def authorised() -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), expected)

    def guarded_body(kind: str) -> bytes | tuple[Response, int]:
        if not authorised():
            return reject(kind, 401, "unauthorised", "missing or wrong bearer token")
        try:
            return _read_body(config.max_body_bytes)
        except BodyTooLarge:
            return reject(kind, 413, "too_large", f"body larger than {config.max_body_bytes} bytes")

    def notification_route(kind: str, allowed: set[str] | None) -> Any:
        body = guarded_body(kind)
        if not isinstance(body, bytes):
            return body
        try:
            notification = parse_notification(body)
            action = notification.action()
        except PayloadError as exc:
            return reject(
                kind, exc.status, "invalid_payload" if exc.status == 400 else "unknown_action", str(exc)
            )
        if allowed is not None and action not in allowed:
            return reject(kind, 422, "wrong_route", f"action {action!r} not accepted on {request.path}")
        status, result = rb.handle(notification, action)
        return jsonify(result), status

    @app.post("/alerts")
    def alerts() -> Any:
        return notification_route("alerts", None)

    @app.post("/page")
    def page() -> Any:
        return notification_route("page", {"page"})

    @app.post("/drain")
    def drain() -> Any:
        body = guarded_body("drain")
        if not isinstance(body, bytes):
            return body
        try:
            document = json.loads(body)
            node, draining = document["node"], document["draining"]
            if not isinstance(node, str) or not isinstance(draining, bool):
                raise TypeError("node must be a string and draining a boolean")
        except (ValueError, KeyError, TypeError) as exc:
            return reject("drain", 400, "invalid_payload", f"expected {{node: str, draining: bool}}: {exc}")
        status, result = rb.set_draining(node, draining)
        return jsonify(result), status

    @app.post("/v3/discovery:endpoints")
    def discovery_endpoints() -> Any:
        try:
            body = _read_body(config.max_body_bytes)  # Envoy sends its node, extensions list included
            document = json.loads(body or b"{}")
            if not isinstance(document, dict):
                raise ValueError("DiscoveryRequest must be a JSON object")
        except BodyTooLarge:
            return reject("eds", 413, "too_large", "DiscoveryRequest too large")
        except ValueError as exc:
            return reject("eds", 400, "invalid_payload", f"DiscoveryRequest is not valid JSON: {exc}")
        type_url = document.get("type_url") or document.get("typeUrl") or CLA_TYPE
        if type_url != CLA_TYPE:
            return reject("eds", 400, "invalid_payload", f"unsupported type_url {type_url!r}")
        names = document.get("resource_names") or document.get("resourceNames") or []
        response = rb.discovery()
        if names and rb.config.envoy_cluster not in names:
            response["resources"] = []
        return jsonify(response)

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        if rb.ready:
            return jsonify({"ready": True, "eds_version": rb.state.version})
        return jsonify(
            {"ready": False, "state_loaded": rb.state_loaded, "eds_published": rb.eds_published}
        ), 503

    return app
