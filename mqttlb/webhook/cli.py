"""``mqttlb webhook``: the rebalancer — HTTP API (waitress), reconcile loop and Alertmanager resync."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from flask import Flask

from mqttlb.brokers.eviction import EvictionError
from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.logs import add_log_flags, setup_from_args
from mqttlb.prometheus_api import PrometheusApi
from mqttlb.reload import Accepted, reload_on_sighup
from mqttlb.rulegen import cpu_rate_window
from mqttlb.secure import SecretError, client_session, load_credentials
from mqttlb.webhook.app import create_app, server_error_hook
from mqttlb.webhook.config import ConfigError, WebhookConfig, WebhookConfigError, load_config, load_token
from mqttlb.webhook.controller import Controller
from mqttlb.webhook.evict_lever import build_evict_lever
from mqttlb.webhook.ha import Follower, Replica
from mqttlb.webhook.lease import open_lease
from mqttlb.webhook.levers import EdsFilePublisher, shed_lever_of
from mqttlb.webhook.observe import ClusterObserver
from mqttlb.webhook.reload import CHECKED_CONFIG_ENV, check_reload, checked_copy, take_checked_copy
from mqttlb.webhook.resync import Resyncer
from mqttlb.webhook.server import Serving, create_tls_webhook_server, create_webhook_server
from mqttlb.webhook.state import StateError
from mqttlb.webhook.xds_grpc import XdsServer, attach_xds

log = logging.getLogger("mqttlb.webhook")
STOP_TIMEOUT_SECONDS = 10.0  # a reload waits this long for the reconcile pass under way
LOST_LEASE_EXIT = 3
BROKER_TIMEOUT_SECONDS = 5.0  # a broker's eviction side answers a listing within this (a batch adds its own time)
# The HTTP server's settings (connection limit, idle timeout, threads, JSON 413) are in
# mqttlb.webhook.server, so that tests run exactly what this command runs.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb webhook",
        description="The rebalancer: receives Alertmanager's notifications into a firing set, and one reconcile "
        "loop re-weights Envoy's endpoints by spare CPU, sheds new connections when the cluster is hot and "
        "publishes the operator's drains.",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="webhook YAML (listen, nodes, eds_path, token_file: the bearer token every route but /healthz, /readyz "
        "and /runbooks/ must carry, xds_token_file: the other one every gRPC xDS stream (xds_grpc_listen) must "
        "carry, ...); SIGHUP reads it again: "
        "a config a start would refuse is refused in one log line and the running one kept, a good one restarts "
        "the process in place (same PID and command line; state, EDS file and audit log carry over) on the very "
        "text checked; SIGHUPs during the restart are queued",
    )
    parser.add_argument("--dry-run", action="store_true", help="decide and log, but do not touch Envoy or files")
    parser.add_argument("--listen", help="host:port to serve on (overrides the config's listen)")
    add_log_flags(parser)
    return parser


@dataclass
class Rebalancer:
    """Everything one ``mqttlb webhook`` process runs, wired from one config (tests use it too)."""

    config: WebhookConfig
    controller: Controller
    resyncer: Resyncer
    app: Flask
    threads: list[threading.Thread] = field(default_factory=list)
    xds: XdsServer | None = None  # config.xds_grpc_listen: the gRPC xDS server the controller publishes to

    @classmethod
    def build(cls, config: WebhookConfig, token: str | None = None) -> Rebalancer:
        timeout = config.http_timeout_seconds
        envoy = EnvoyAdminClient(config.envoy_admin, timeout=timeout)
        try:
            evict_lever = build_evict_lever(config.nodes, timeout=max(timeout, BROKER_TIMEOUT_SECONDS))
            basic = (config.basic_auth.username, config.basic_auth.password()) if config.basic_auth else None
            prometheus_session = client_session(config.prometheus_auth)
            alertmanager_session = client_session(config.alertmanager_auth)
            if config.tls is not None:
                config.tls.context()  # a certificate or key that cannot be loaded stops the start here
            xds_credentials = load_credentials(config.xds_token_file, None) if config.xds_token_file else None
        except EvictionError as exc:
            raise WebhookConfigError(str(exc)) from None
        except SecretError as exc:
            raise WebhookConfigError(str(exc)) from None
        controller = Controller(
            config,
            observer=ClusterObserver(
                config.cluster,
                config.envoy_cluster,
                config.node_names,
                PrometheusApi(config.prometheus_url, timeout, session=prometheus_session),
                envoy,
                config.params().mqtt_cluster_label,
                cpu_window=cpu_rate_window(config.params()),
            ),
            publisher=EdsFilePublisher(config.eds_path),
            shed_lever=shed_lever_of(config, envoy, timeout),
            evict_lever=evict_lever,
        )
        resyncer = Resyncer(
            config.alertmanager_urls,
            controller.firing,
            controller.metrics,
            interval=controller.params.alertmanager.repeat_interval_seconds,
            timeout=timeout,
            clock=time.time,
            on_change=controller.wake,
            session=alertmanager_session,
        )
        token = token if token is not None else load_token(config)
        if xds_credentials is not None and xds_credentials.token == token:
            raise WebhookConfigError(
                f"{config.xds_token_file}: the xDS token must differ from the webhook's bearer token "
                "(Envoy's admin interface shows it to anyone who can reach it)"
            )
        app = create_app(controller, token, config.max_body_bytes, basic=basic, open_routes=config.open_routes)
        listen = config.xds_grpc_listen
        # xDS streams need their own token, which reads the snapshot only (Envoy sends it as initial metadata);
        # the HTTP routes never accept it (create_app has only the webhook's token)
        xds = None
        if listen is not None and xds_credentials is not None:  # the config requires both together
            xds = attach_xds(controller, listen, tls=config.tls, credentials=xds_credentials)
        return cls(config, controller, resyncer, app, xds=xds)

    def start(self, stop: threading.Event) -> None:
        """Serve xDS (if configured), then act (:meth:`lead`), or with a ``lease`` run the replica loop that
        follows the leader until it holds the lease.  Raises OSError when the xDS address cannot be bound
        or a Kubernetes lease is configured outside a pod, StateError (see Controller.start)."""
        if self.xds is not None:
            self.xds.start()
        if self.config.lease is not None:  # a replica: act only while holding the lease (mqttlb.webhook.ha)
            replica = Replica(
                open_lease(self.config.lease),
                lead=self.lead,
                follow=Follower(self.config, self.controller, self.xds),
                renew_seconds=self.config.lease.renew_seconds,
                on_lost=_exit_on_lost_lease,
            )
            self.threads = [threading.Thread(target=replica.run, args=(stop,), daemon=True, name="lease")]
            self.threads[0].start()
            return
        self.lead(stop)

    def lead(self, stop: threading.Event) -> None:
        """Act: publish the persisted state, rebuild the firing set, start the loop and the resync until
        ``stop`` is set.  Raises StateError (see Controller.start)."""
        self.controller.start()
        self.resyncer.once()
        threads = [
            threading.Thread(target=self.controller.run, args=(stop,), daemon=True, name="reconcile"),
            threading.Thread(target=self.resyncer.run, args=(stop,), daemon=True, name="resync"),
        ]
        self.threads += threads
        for thread in threads:
            thread.start()

    def stop(self, stop: threading.Event, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Set ``stop`` and wait up to ``timeout`` s for the loop to end its pass and the resync to end."""
        stop.set()
        for thread in self.threads:
            thread.join(timeout)
        if self.xds is not None:
            self.xds.stop()


def _exit_on_lost_lease() -> None:
    """A leader that lost its lease must not act again in this process: exit (status 3) at once, and let
    the supervisor start a fresh standby (as client-go's leader election does)."""
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)


def _bind(config: WebhookConfig, rebalancer: Rebalancer) -> Serving:
    """The HTTP(S) server on ``config.listen``, bound and not yet serving.  Raises OSError (port in use)."""
    host, port = config.listen_host_port()
    if config.tls is not None:
        return create_tls_webhook_server(rebalancer.app, host, port, tls=config.tls)
    return create_webhook_server(
        rebalancer.app,
        host,
        port,
        max_body_bytes=config.max_body_bytes,
        on_error=server_error_hook(rebalancer.controller.metrics, config.max_body_bytes),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_from_args(args)
    overrides: dict[str, object] = {}
    if args.dry_run:
        overrides["dry_run"] = True
    if args.listen:
        overrides["listen"] = args.listen
    stop = threading.Event()
    checked = take_checked_copy()  # set by a SIGHUP restart: the text the old process checked
    try:
        try:
            config = load_config(args.config, overrides, read_from=checked)
        finally:
            if checked is not None:
                checked.unlink(missing_ok=True)
        rebalancer = Rebalancer.build(config)
    except (ConfigError, StateError, OSError) as exc:
        log.error("%s", exc)
        return 2
    host, port = config.listen_host_port()
    controller = rebalancer.controller
    # Bind before anything acts: a second webhook started on a port in use must exit before its loop
    # publishes weights or moves a lever.
    try:
        server = _bind(config, rebalancer)
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.listen, exc.strerror or exc)
        return 2
    try:
        rebalancer.start(stop)
    except (StateError, OSError) as exc:
        server.close()
        log.error("%s", exc)
        return 2
    log.info(
        "serving on %s:%d over %s (dry_run=%s); reconcile pass every %.1fs, step interval %.1fs",
        host,
        port,
        "https" if config.tls else "http",
        config.dry_run,
        controller.pass_seconds,
        controller.timing.step_seconds,
    )

    def check() -> Accepted:
        copy = checked_copy(args.config)
        try:
            changed = check_reload(args.config, overrides, config, Rebalancer.build, read_from=copy)
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        return Accepted(changed, {CHECKED_CONFIG_ENV: str(copy)})

    reload_on_sighup("mqttlb webhook", check=check, prepare=lambda: rebalancer.stop(stop))
    try:
        server.run()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
