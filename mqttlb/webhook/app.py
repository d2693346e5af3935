"""HTTP layer: validate, authenticate, record desired state, answer.  Never waits on Envoy or Prometheus.

Routes:
Every route but ``/healthz`` and ``/readyz`` (liveness and readiness probes, which say nothing an
outsider could use) and ``/runbooks/`` (the shipped runbooks) needs a credential: the bearer token, or
the basic-auth user when one is configured (:class:`mqttlb.secure.Credentials`); ``open_routes`` (config
key) lifts that for the read routes named there (``home``, ``status``, ``metrics``, ``eds``), e.g. REST EDS
for Envoys that cannot send a header.

- ``POST /alerts`` (Alertmanager, bearer token): the notification's alerts update the firing set and
  wake the reconcile loop; the answer counts what changed in the set (never lists the input back).
- ``POST /drain`` (operator, bearer token): ``{"node": str, "draining": bool}`` becomes the desired
  drain state of that node; the next pass publishes it (202).
- ``POST /rebalance`` (operator, bearer token): ``{"dry_run": bool}``: arm the evict lever now (202), or
  name the clients each donor would lose now (200, lists them through the brokers' eviction side).
- ``POST /evacuate`` (operator, bearer token): ``{"node": str, "evacuate": bool, "dry_run": bool}``:
  drain the node and evict its clients batch by batch at the bounded rate (202), stop (202), or name
  the first batch (200).
- ``POST /v3/discovery:endpoints``: REST-JSON EDS, from the current immutable snapshot (credential unless
  ``open_routes`` has ``eds``).
- ``GET /status``: the controller's state, the firing set and the published snapshot, as JSON.
- ``GET /metrics``, ``/healthz``, ``/readyz``, and ``GET /`` (a page for people: per node health, CPU,
  connections, weight decided/published/applied, draining; shed level, firing alerts, links).
- ``GET /runbooks/`` and ``GET /runbooks/<AlertName>.md``: the shipped runbooks, the target of every
  alert's ``runbook_url`` on the local stack; open without a credential like the probes (public documents,
  no state; see :mod:`mqttlb.webhook.runbooks`).

No handler takes the reconcile loop's lock or does I/O beyond the request: inputs go to the firing
set or the drain wishes (in-memory), readers read immutable snapshots.

Every refusal is a short JSON ``{"error": ...}`` (never an echo of the body, never HTML), is
counted in ``WEBHOOK_REJECTED{route, reason}`` and logged in one short line, and changes nothing:
401 (credential; with a ``WWW-Authenticate`` header), 400 (invalid JSON or schema), 404 (unknown node
or path), 405, 413 (body over
``max_body_bytes``; waitress refuses it before the app, see :mod:`mqttlb.webhook.server`), 422
(unknown ``action``).  A handler that crashes answers a JSON 500 and counts
``WEBHOOK_FAILURES{kind="http", reason="exception"}``.
"""

from __future__ import annotations

import html
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from mqttlb.secure import Credentials
from mqttlb.webhook import runbooks
from mqttlb.webhook.controller import Controller
from mqttlb.webhook.firing import ApplyResult, FiringInputError
from mqttlb.webhook.metrics import WebhookMetrics
from mqttlb.webhook.payload import (
    MAX_ERROR_CHARS,
    PayloadError,
    parse_discovery_request,
    parse_drain,
    parse_evacuate,
    parse_notification,
    parse_rebalance,
)
from mqttlb.webhook.server import ErrorHook
from mqttlb.webhook.test_alerts import SeenTestAlerts, record_test_alerts

log = logging.getLogger(__name__)

#: ``route`` label of WEBHOOK_REJECTED by path (contract.REJECT_ROUTES); any other path is "other".
ROUTES = {
    "/alerts": "alerts",
    "/drain": "drain",
    "/rebalance": "rebalance",
    "/evacuate": "evacuate",
    "/v3/discovery:endpoints": "eds",
    "/status": "status",
    "/metrics": "metrics",
    "/": "home",
}
OTHER_ROUTE = "other"
#: Probes answer without a credential: liveness and readiness only (no state, no weights).
ALWAYS_OPEN = frozenset({"/healthz", "/readyz"})
#: The read routes ``open_routes`` may open, by name.
READ_ROUTES = {"/": "home", "/status": "status", "/metrics": "metrics", "/v3/discovery:endpoints": "eds"}


class BodyTooLarge(Exception):
    pass


def route_of(path: str) -> str:
    return ROUTES.get(path, OTHER_ROUTE)


def reason_of(status: int) -> str:
    """``reason`` label of WEBHOOK_REJECTED (contract.REJECT_REASONS) for a 4xx status."""
    return {401: "unauthorised", 404: "wrong_route", 405: "wrong_route", 413: "too_large", 422: "unknown_action"}.get(
        status, "invalid_payload"
    )


def too_large_message(max_body_bytes: int) -> str:
    return f"body larger than {max_body_bytes} bytes"


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


def _count_rejection(
    metrics: WebhookMetrics, method: str, path: str, status: int, client: str, message: str, reason: str | None = None
) -> None:
    route = route_of(path)
    metrics.rejected.labels(route, reason or reason_of(status)).inc()
    log.warning("rejected %s %s from %s: %s (%d)", method[:16], route, client, message[:MAX_ERROR_CHARS], status)


def server_error_hook(metrics: WebhookMetrics, max_body_bytes: int) -> ErrorHook:
    """What the HTTP server calls for a request it refuses itself (a body over its limit, a
    request it cannot parse): count and log it like the app's refusals; returns the message."""

    def on_error(method: str, path: str, status: int, client: str) -> str:
        if status >= 500:
            metrics.failures.labels("http", "exception").inc()
            log.error("HTTP server error %d on %s %s from %s", status, method[:16], route_of(path), client)
            return "internal error"
        message = too_large_message(max_body_bytes) if status == 413 else "malformed HTTP request"
        _count_rejection(metrics, method, path, status, client, message)
        return message

    return on_error


def _alerts_answer(result: ApplyResult) -> dict[str, Any]:
    """Counts only: the answer's size does not grow with the notification."""
    return {
        "result": "changed" if result.changed else "unchanged",
        "firing_version": result.version,
        "added": len(result.added),
        "updated": len(result.updated),
        "removed": len(result.removed),
        "expired": len(result.expired),
        "ignored": dict(Counter(i.reason.value for i in result.ignored)),
    }


HOME_PAGE = """<!doctype html><title>mqttlb rebalancer</title>
<h1>mqttlb rebalancer</h1>
<p>Cluster <b>{cluster}</b>{dry}. EDS snapshot version {version}; shed level {shed}; draining: {draining};
firing alerts: {firing}.</p>
<table border="1" cellpadding="4">
<tr><th>node</th><th>health</th><th>CPU</th><th>connections</th><th>weight decided</th><th>published</th>
<th>applied (Envoy)</th><th>draining</th></tr>
{rows}
</table>
<ul>
<li><a href="status">/status</a>: weights decided and published, draining, shedding, firing alerts (JSON)</li>
<li><a href="metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="runbooks/">/runbooks/</a>: what each alert means and what to do (no credential needed)</li>
<li>POST /alerts: Alertmanager's webhook (bearer token); POST /drain: {{"node", "draining"}} (bearer token)</li>
</ul>
<p>From a shell: <code>mqttlb status</code>.</p>
"""


def _home_row(node: Mapping[str, Any]) -> str:
    """One ``<tr>`` of the home page for one node of :meth:`Controller.status` (``-``: not known yet)."""

    def cell(value: Any, percent: bool = False) -> str:
        if value is None:
            return "<td>-</td>"
        if percent and isinstance(value, float):
            return f"<td>{value:.0%}</td>"
        if isinstance(value, bool):
            return f"<td>{'yes' if value else 'no'}</td>"
        return f"<td>{html.escape(str(value))}</td>"

    keys = ("health", "cpu", "connections", "weight", "published", "applied", "draining")
    return f"<tr><td>{html.escape(node['node'])}</td>" + "".join(cell(node[k], k == "cpu") for k in keys) + "</tr>"


def create_app(
    controller: Controller,
    token: str,
    max_body_bytes: int,
    *,
    basic: tuple[str, str] | None = None,
    open_routes: Collection[str] = (),
) -> Flask:
    """The Flask app over ``controller`` (``/readyz`` says 503 until it has started).

    ``token``: the bearer token every route but the probes needs; ``basic``: (user, password) accepted
    as well; ``open_routes``: names from READ_ROUTES' values served without a credential.  Bodies over
    ``max_body_bytes`` are refused (413)."""
    unknown = set(open_routes) - set(READ_ROUTES.values())
    if unknown:
        raise ValueError(f"open_routes: unknown route names {sorted(unknown)}; known: {sorted(READ_ROUTES.values())}")
    app = Flask(__name__)
    # one byte more than allowed: werkzeug truncates a chunked body at the limit silently, so the
    # extra byte is what tells "exactly the limit" from "too large" in _read_body
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes + 1
    credentials = Credentials(token, basic)
    metrics = controller.metrics
    firing = controller.firing
    seen_tests = SeenTestAlerts()  # records each test alert once per firing
    app.extensions["controller"] = controller
    runbook_texts = runbooks.load_runbooks()

    def reject(status: int, message: str, reason: str | None = None) -> tuple[Response, int]:
        _count_rejection(metrics, request.method, request.path, status, str(request.remote_addr), message, reason)
        return jsonify({"error": message[:MAX_ERROR_CHARS]}), status

    def refuse_credentials() -> tuple[Response, int]:
        message = "missing or wrong bearer token" if basic is None else "missing or wrong credentials"
        answer, status = reject(401, message)
        answer.headers["WWW-Authenticate"] = credentials.schemes()
        return answer, status

    @app.before_request
    def require_credentials() -> tuple[Response, int] | None:
        # unknown paths and methods go on to their 404 / 405
        if request.routing_exception is not None or request.path in ALWAYS_OPEN:
            return None
        if request.path.startswith(f"{runbooks.PREFIX}/"):  # public documents (mqttlb.webhook.runbooks)
            return None
        if READ_ROUTES.get(request.path) in open_routes:
            return None
        return None if credentials.allows(request.headers.get("Authorization")) else refuse_credentials()

    def guarded_body() -> bytes | tuple[Response, int]:
        try:
            return _read_body(max_body_bytes)
        except BodyTooLarge:
            return reject(413, too_large_message(max_body_bytes))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        if status == 413:
            return reject(413, too_large_message(max_body_bytes))
        if status < 500:
            return reject(status, exc.name)
        return jsonify({"error": exc.name}), status

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> tuple[Response, int]:
        metrics.failures.labels("http", "exception").inc()
        log.error("%s %s crashed: %s", request.method, route_of(request.path), type(exc).__name__, exc_info=exc)
        return jsonify({"error": "internal error"}), 500

    @app.post("/alerts")
    def alerts() -> Any:
        started = time.perf_counter()
        body = guarded_body()
        if not isinstance(body, bytes):
            return body
        try:
            notification = parse_notification(body)
            notification.actions()
            result = firing.apply(notification.alerts, controller.clock())
            metrics.decision_seconds.observe(time.perf_counter() - started)
        except PayloadError as exc:
            return reject(exc.status, str(exc))
        except FiringInputError as exc:
            return reject(400, str(exc))
        for ignored in result.ignored:
            metrics.alerts_ignored.labels(ignored.reason.value).inc()
        if result.changed:
            controller.wake()
        record_test_alerts(controller, list(notification.alerts), result, seen_tests)
        log.info(
            "notification %s: %s",
            notification.summary(),
            "firing set changed" if result.changed else "no change (duplicate or stale)",
        )
        return jsonify(_alerts_answer(result))

    def operator_request(parse: Callable[[bytes], Any], act: Callable[[Any], tuple[Response, int]]) -> Any:
        """An operator's POST: token and size checked, body parsed (400), then ``act(request)``; a KeyError
        from it is an unknown node (404), a ValueError a refusal with its reason (409)."""
        body = guarded_body()
        if not isinstance(body, bytes):
            return body
        try:
            wish = parse(body)
        except PayloadError as exc:
            return reject(400, str(exc))
        try:
            return act(wish)
        except KeyError:
            return reject(404, f"unknown node {str(getattr(wish, 'node', ''))[:100]!r}", "invalid_payload")
        except ValueError as exc:
            return reject(409, str(exc), "refused")

    def act_drain(wish: Any) -> tuple[Response, int]:
        controller.request_drain(wish.node, wish.draining)
        return jsonify({"result": "accepted", "node": wish.node, "draining": wish.draining}), 202

    def act_rebalance(wish: Any) -> tuple[Response, int]:
        if wish.dry_run:
            return jsonify({"result": "dry_run", "batches": controller.eviction_preview()}), 200
        waiting = controller.request_rebalance()
        return jsonify({"result": "accepted", **({"waiting": waiting} if waiting else {})}), 202

    def act_evacuate(wish: Any) -> tuple[Response, int]:
        if wish.dry_run and not wish.evacuate:
            return reject(400, "dry_run previews starting an evacuation: it cannot be combined with evacuate false")
        if wish.dry_run:
            batches = controller.eviction_preview(evacuate=wish.node)
            return jsonify({"result": "dry_run", "node": wish.node, "batches": batches}), 200
        controller.request_evacuate(wish.node, wish.evacuate)
        return jsonify({"result": "accepted", "node": wish.node, "evacuate": wish.evacuate}), 202

    @app.post("/drain")
    def drain() -> Any:
        return operator_request(parse_drain, act_drain)

    @app.post("/rebalance")
    def rebalance() -> Any:
        return operator_request(parse_rebalance, act_rebalance)

    @app.post("/evacuate")
    def evacuate() -> Any:
        return operator_request(parse_evacuate, act_evacuate)

    @app.post("/v3/discovery:endpoints")
    def discovery_endpoints() -> Any:
        try:
            names = parse_discovery_request(_read_body(max_body_bytes)).names
        except BodyTooLarge:
            return reject(413, too_large_message(max_body_bytes))
        except PayloadError as exc:
            return reject(400, str(exc))
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

    @app.get(f"{runbooks.PREFIX}/")
    def runbook_index() -> Response:
        return Response(runbooks.index_page(sorted(runbook_texts)), mimetype="text/html")

    @app.get(f"{runbooks.PREFIX}/<name>.md")
    def runbook(name: str) -> Response:
        text = runbook_texts.get(name)
        if text is None:
            abort(404)
        return Response(text, content_type=runbooks.TEXT)

    @app.get("/")
    def home() -> Response:
        snapshot = controller.snapshot
        status = controller.status()
        nodes, firing = status["nodes"], status["firing"]
        draining = [n["node"] for n in nodes if n["draining"]]
        page = HOME_PAGE.format(
            cluster=html.escape(controller.config.cluster),
            dry=" (dry run: decides and logs, does not act)" if controller.config.dry_run else "",
            version=snapshot.version if snapshot else "-",
            shed=controller.state.shed_level,
            draining=html.escape(", ".join(draining)) if draining else "none",
            rows="\n".join(_home_row(n) for n in nodes),
            firing=html.escape(", ".join(a["alertname"] for a in firing["alerts"]) or "none"),
        )
        return Response(page, mimetype="text/html")

    return app
