"""``mqttlb webhook``: serve the rebalancer webhook with waitress."""

from __future__ import annotations

import argparse
import logging
import threading

import waitress

from mqttlb.logs import add_log_flags, setup_from_args
from mqttlb.webhook.app import create_app
from mqttlb.webhook.config import WebhookConfigError, load_config
from mqttlb.webhook.state import StateError

log = logging.getLogger("webhook")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb webhook",
        description="Alertmanager webhook that re-weights Envoy endpoints by spare CPU and sheds new "
        "connections when the cluster is hot.",
    )
    parser.add_argument(
        "--config", required=True, help="webhook YAML (listen, nodes, eds_path, token_file, ...)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and log, but do not touch Envoy or files"
    )
    parser.add_argument("--listen", help="host:port to serve on (overrides the config's listen)")
    parser.add_argument(
        "--tick-seconds",
        type=float,
        default=None,
        help="interval of the recovery tick that ramps weights/shedding back after a resolved alert "
        "(default: policy cooldown_seconds, at least 1)",
    )
    add_log_flags(parser)
    return parser


def _ticker(app_rebalancer: object, interval: float, stop: threading.Event) -> None:
    from mqttlb.webhook.rebalancer import Rebalancer

    assert isinstance(app_rebalancer, Rebalancer)
    while not stop.wait(interval):
        try:
            app_rebalancer.tick()
        except Exception:  # the ticker must survive one bad tick; the error is logged and counted
            log.exception("recovery tick crashed")
            app_rebalancer.metrics.failures.labels("tick", "exception").inc()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_from_args(args)
    overrides: dict[str, object] = {}
    if args.dry_run:
        overrides["dry_run"] = True
    if args.listen:
        overrides["listen"] = args.listen
    if args.tick_seconds is not None and args.tick_seconds <= 0:
        log.error("--tick-seconds must be positive")
        return 2
    try:
        config = load_config(args.config, overrides)
        app = create_app(config)
    except (WebhookConfigError, StateError) as exc:
        log.error("%s", exc)
        return 2
    rebalancer = app.extensions["rebalancer"]
    interval = args.tick_seconds or max(1.0, rebalancer.policy.cooldown_seconds)
    stop = threading.Event()
    threading.Thread(target=_ticker, args=(rebalancer, interval, stop), daemon=True, name="tick").start()
    host, port = config.listen_host_port()
    log.info("serving on %s:%d (dry_run=%s)", host, port, config.dry_run)
    try:
        waitress.serve(
            app,
            host=host,
            port=port,
            threads=4,
            max_request_body_size=config.max_body_bytes + 1,
            ident="mqttlb-webhook",
        )
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
