"""Every component's config and command line, built from a `Topology`, for both stacks.

`mqttlb.stack.render` (the native stack under supervisord) and `mqttlb.stack.compose_render` (the
Docker Compose files) call these same functions with `native_topology(cfg)` and
`compose_topology(cfg)`; the only branches here are on the topology's named `Switches`.

Configs are returned as plain dicts (YAML-ready) or text; command lines as argument lists without
the program itself (native: the binary's path or ``python -m mqttlb.cli``; compose: the image's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mqttlb import contract
from mqttlb.alertmanager_config import build as build_alertmanager_config
from mqttlb.params import Params
from mqttlb.secure import BasicAuth, ClientAuth
from mqttlb.stack.config import NO_SLOW_START
from mqttlb.stack.topology import HIVEMQ_METRICS_PATH, BrokerNode, Service, Topology
from mqttlb.webhook import runbooks
from mqttlb.webhook.eds import Endpoint
from mqttlb.webhook.shedding import OVERLOAD_THRESHOLD

# Descriptors Envoy keeps for itself (admin, listeners, EDS watch, logs, stats flushing).
ENVOY_FD_RESERVE = 256
# The cluster's circuit-breaker cap at rest.  Envoy's default (1024) would shed a normal fleet; the
# webhook lowers it at runtime (circuit_breakers.<cluster>.default.max_connections) when shedding.
ENVOY_CLUSTER_MAX_CONNECTIONS = 100_000
HEALTH_CHECK_CLIENT_ID = contract.HEALTH_CHECK_CLIENT_ID
HEALTH_CHECK_INTERVAL = "2s"
MQTT_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"  # CONNACK, session present 0, return code 0 (accepted)
# eds=rest: the static cluster Envoy polls the webhook through, and how often.
WEBHOOK_EDS_CLUSTER = "mqttlb_webhook"
EDS_REFRESH = "2s"
# eds=grpc / delta-grpc: the static cluster of the webhook's xDS server (HTTP/2), and Envoy's ADS api_type.
WEBHOOK_XDS_CLUSTER = "mqttlb_xds"
ADS_API_TYPES = {"grpc": "GRPC", "delta-grpc": "DELTA_GRPC"}
# The ADS stream carries the xDS token (Paths.xds_token: its own, which reads the endpoint snapshot and nothing
# else; the xDS server refuses a stream without it, and no HTTP route accepts it: Envoy's admin interface, which
# has no login, shows it in /config_dump, so Envoy never holds the webhook's own token).  Envoy
# cannot read a file or variable into gRPC metadata, so its bootstrap holds this slot, and the command
# Envoy runs under (envoy_command) writes a copy with the token in it, mode 0600, before exec'ing Envoy.
XDS_TOKEN_SLOT = "@MQTTLB_XDS_TOKEN@"
# POSIX sh; arguments: the token file, the bootstrap with the slot, the copy to write, then Envoy's command
# line.  The token must be RFC 6750 token characters, which also keeps it literal in sed and in YAML.  One
# line, no " ;" or " #" (supervisord's config would read a comment there).
ENVOY_START_SCRIPT = " && ".join(
    [
        "set -eu",
        't=$(cat "$1")',
        'case $t in ""|*[!A-Za-z0-9._~+/=-]*) echo "mqttlb: $1: not a bearer token '
        '(RFC 6750: letters, digits, - . _ ~ + / and = at the end)" >&2 && exit 78;; esac',
        "umask 077",
        f'sed "s|{XDS_TOKEN_SLOT}|$t|" "$2" > "$3.new"',
        'mv "$3.new" "$3"',
        "shift 3",
        'exec "$@"',
    ]
)
ENVOY_START_NAME = "mqttlb-envoy-start"  # $0 of the script (names it in ps and in sh's own errors)
# brokers=hivemq: Prometheus also scrapes HiveMQ's own names (com_hivemq_*) for drilling down; the
# rules use the broker exporter's job (contract.JOB_BROKERS).
HIVEMQ_JOB = "hivemq"
EXPORTER_SCRAPE_TIMEOUT_SECONDS = 2
# The one user of Prometheus's and Alertmanager's web config (basic auth); its password is generated
# into the state dir (Paths.web_password) and its bcrypt hash into their web.yml.
WEB_USER = "mqttlb"

INJECTED_RESOURCE = "envoy.resource_monitors.injected_resource"
DOWNSTREAM_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"
TYPE_PREFIX = "type.googleapis.com/envoy.extensions."


# ------------------------------------------------------------------ Envoy
def envoy_connection_limit(topo: Topology) -> int:
    """The most client connections Envoy may hold: the stack file's value, or what its fds allow.

    Each proxied connection costs Envoy two descriptors (client and broker side), so the cap is
    (open files - reserve) / 2, the reserve being 256 or a quarter of a small limit.  When socket(2)
    fails with EMFILE, Envoy 1.40 hits an ENVOY_BUG and then dies with SIGSEGV, dropping every
    connection; with this cap it refuses the extra clients instead.
    """
    if topo.settings.envoy_max_connections is not None:
        return topo.settings.envoy_max_connections
    limit = topo.switches.envoy_open_files
    return max(1, (limit - min(ENVOY_FD_RESERVE, limit // 4)) // 2)


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _eds_source(topo: Topology) -> dict[str, Any]:
    if topo.switches.eds in ADS_API_TYPES:
        return {"ads": {}}
    if topo.switches.eds == "file":
        return {
            "path_config_source": {
                "path": str(topo.state.eds_file),
                "watched_directory": {"path": str(topo.state.eds_file.parent)},
            }
        }
    return {
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": [WEBHOOK_EDS_CLUSTER],
            "refresh_delay": EDS_REFRESH,
            "request_timeout": "1s",
        }
    }


def _webhook_eds_cluster(topo: Topology) -> dict[str, Any]:
    """eds=rest: the webhook as a static upstream (STRICT_DNS: a service name or an IP literal)."""
    return _static_cluster(WEBHOOK_EDS_CLUSTER, topo.webhook.reach_host, topo.webhook.port)


def _webhook_xds_cluster(topo: Topology) -> dict[str, Any]:
    """eds=grpc / delta-grpc: the webhook's xDS server, spoken to over HTTP/2 (gRPC)."""
    cluster = _static_cluster(WEBHOOK_XDS_CLUSTER, topo.webhook_xds.reach_host, topo.webhook_xds.port)
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    if topo.settings.tls:  # the webhook serves xDS with the stack's certificate too (its tls block)
        cluster["transport_socket"] = _upstream_tls(str(topo.state.tls_ca), topo.webhook_xds.reach_host)
    return cluster


def _upstream_tls(ca_file: str, ip: str) -> dict[str, Any]:
    """Envoy's TLS to an upstream whose certificate ``ca_file`` signed for the IP address ``ip`` (ALPN h2:
    gRPC)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TYPE_PREFIX + "transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {
                    "trusted_ca": {"filename": ca_file},
                    "match_typed_subject_alt_names": [{"san_type": "IP_ADDRESS", "matcher": {"exact": ip}}],
                },
            },
        },
    }


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    """A one-endpoint upstream (STRICT_DNS: a service name or an IP literal)."""
    return {
        "name": name,
        "connect_timeout": "1s",
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_ONLY",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(host, port)}}]}],
        },
    }


def _ads_config(topo: Topology) -> dict[str, Any]:
    """eds=grpc / delta-grpc: one aggregated stream (SotW or incremental) to the webhook's xDS server, with
    ``authorization: Bearer <xDS token>`` metadata (the token is the slot :func:`envoy_command` fills)."""
    return {
        "api_type": ADS_API_TYPES[topo.switches.eds],
        "transport_api_version": "V3",
        "grpc_services": [
            {
                "envoy_grpc": {"cluster_name": WEBHOOK_XDS_CLUSTER},
                "initial_metadata": [{"key": "authorization", "value": f"Bearer {XDS_TOKEN_SLOT}"}],
            }
        ],
        "set_node_on_first_message_only": True,
    }


def mqtt_connect_probe(client_id: str = HEALTH_CHECK_CLIENT_ID) -> bytes:
    """An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 60 s) for Envoy's TCP health check.

    Format: MQTT 3.1.1 section 3.1 (fixed header 0x10, remaining length, "MQTT", level 4, flags,
    keep-alive, client id).  A broker that answers with CONNACK 0 (``20 02 00 00``) accepts clients.
    """
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(ident).to_bytes(2, "big") + ident
    remaining = len(variable) + len(payload)
    if remaining > 127:
        raise ValueError("client id too long for a one-byte remaining length")
    return b"\x10" + bytes([remaining]) + variable + payload


def _health_check() -> dict[str, Any]:
    """Active health check of every broker: a fresh MQTT CONNECT per probe, CONNACK 0 expected.

    A stopped or hung broker is unhealthy after two failed probes and gets no new connections,
    whatever its EDS weight; one good probe brings it back.
    """
    return {
        "timeout": "1s",
        "interval": HEALTH_CHECK_INTERVAL,
        "no_traffic_interval": HEALTH_CHECK_INTERVAL,  # default 60 s: a quiet cluster would learn late
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "reuse_connection": False,  # one CONNECT per connection (a second one is a protocol error)
        "tcp_health_check": {
            "send": {"text": mqtt_connect_probe().hex()},
            "receive": [{"text": MQTT_CONNACK_ACCEPTED.hex()}],
        },
    }


def _brokers_cluster(topo: Topology) -> dict[str, Any]:
    cfg = topo.settings
    lb_key = "round_robin_lb_config" if cfg.lb_policy == "ROUND_ROBIN" else "least_request_lb_config"
    # Slow start only when a window is set (default 0s, none): with it, the EDF scheduler keeps the
    # deadlines the nodes got while ramping after start-up, and round robin skips a node for the
    # first connections (with 20 s, 3/3/6 of the first 12 on 3 nodes; tests/test_stack_live.py).
    lb_config: dict[str, Any] = {}
    if cfg.lb_policy == "LEAST_REQUEST":  # the bias the policy's weights are computed for (policy_base)
        lb_config["active_request_bias"] = {
            "default_value": cfg.params.policy.active_request_bias,
            "runtime_key": "mqttlb.lb.active_request_bias",
        }
    if cfg.slow_start_window != NO_SLOW_START:
        lb_config["slow_start_config"] = {
            "slow_start_window": cfg.slow_start_window,
            "aggression": {"default_value": 1.0, "runtime_key": "mqttlb.slow_start.aggression"},
            "min_weight_percent": {"value": 10},
        }
    return {
        "name": cfg.envoy_cluster,
        "connect_timeout": "1s",
        "type": "EDS",
        "lb_policy": cfg.lb_policy,
        **({lb_key: lb_config} if lb_config else {}),
        "circuit_breakers": {
            "thresholds": [{"priority": "DEFAULT", "max_connections": ENVOY_CLUSTER_MAX_CONNECTIONS}]
        },
        "health_checks": [_health_check()],
        "eds_cluster_config": {"eds_config": {"resource_api_version": "V3", **_eds_source(topo)}},
        # Envoy's own /stats/prometheus then has envoy_cluster_endpoint_* per endpoint (job envoy).
        "track_cluster_stats": {"per_endpoint_stats": True},
    }


def _overload_manager(topo: Topology) -> dict[str, Any]:
    """The webhook's hard stop (pressure file above OVERLOAD_THRESHOLD) and the connection cap."""
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": INJECTED_RESOURCE,
                "typed_config": {
                    "@type": TYPE_PREFIX + "resource_monitors.injected_resource.v3.InjectedResourceConfig",
                    "filename": str(topo.state.pressure_file),
                },
            },
            {
                # Proactive: Envoy refuses connections above the cap at accept time.
                "name": DOWNSTREAM_CONNECTIONS,
                "typed_config": {
                    "@type": TYPE_PREFIX + "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    "max_active_downstream_connections": envoy_connection_limit(topo),
                },
            },
        ],
        "actions": [
            {
                "name": "envoy.overload_actions.reject_incoming_connections",
                "triggers": [{"name": INJECTED_RESOURCE, "threshold": {"value": OVERLOAD_THRESHOLD}}],
            }
        ],
    }


def envoy_bootstrap(topo: Topology) -> dict[str, Any]:
    """Envoy's bootstrap: the MQTT TCP proxy, the EDS cluster of brokers, admin, runtime, overload."""
    cfg = topo.settings
    tcp_proxy = {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": TYPE_PREFIX + "filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "mqtt",
            "cluster": cfg.envoy_cluster,
        },
    }
    clusters = [_brokers_cluster(topo)]
    if topo.switches.eds == "rest":
        clusters.append(_webhook_eds_cluster(topo))
    ads = uses_ads(topo)
    if ads:
        clusters.append(_webhook_xds_cluster(topo))
    return {
        "node": {"id": f"mqttlb-{cfg.cluster}", "cluster": cfg.cluster},
        **({"dynamic_resources": {"ads_config": _ads_config(topo)}} if ads else {}),
        "admin": {"address": _socket(topo.envoy_admin.listen_host, topo.envoy_admin.port)},
        "layered_runtime": {
            "layers": [{"name": "static", "static_layer": {}}, {"name": "admin", "admin_layer": {}}]
        },
        "overload_manager": _overload_manager(topo),
        "static_resources": {
            "listeners": [
                {
                    "name": "mqtt",
                    "address": _socket(topo.envoy_listener.listen_host, topo.envoy_listener.port),
                    "filter_chains": [{"filters": [tcp_proxy]}],
                }
            ],
            "clusters": clusters,
        },
    }


def uses_ads(topo: Topology) -> bool:
    """Whether Envoy takes its endpoints over an ADS stream (eds=grpc / delta-grpc), which needs the xDS token."""
    return topo.switches.eds in ADS_API_TYPES


def envoy_command(topo: Topology, envoy: str = "envoy", token_file: Path | str | None = None) -> list[str]:
    """The command line that runs Envoy (``envoy``: its binary): with ADS, :data:`ENVOY_START_SCRIPT` under
    ``/bin/sh`` first writes ``files.envoy_bootstrap`` (``files.envoy_config`` with the xDS token read
    from ``token_file``, default the stack's ``state.xds_token``) and then exec's Envoy on it (same PID:
    supervisord's and the container runtime's signals reach Envoy); otherwise Envoy alone.  A bad token file
    stops it before Envoy starts, exit 78 with one line naming the file."""
    if not uses_ads(topo):
        return [envoy, *envoy_args(topo)]
    files = topo.files
    token = topo.state.xds_token if token_file is None else token_file
    fill = [str(token), str(files.envoy_config), str(files.envoy_bootstrap)]
    return ["/bin/sh", "-c", ENVOY_START_SCRIPT, ENVOY_START_NAME, *fill, envoy, *envoy_args(topo)]


def envoy_args(topo: Topology) -> list[str]:
    """Envoy's arguments (``-c``: ``files.envoy_bootstrap`` with ADS, which :func:`envoy_command` writes).

    One worker (``--concurrency 1``): round robin then cycles through the endpoints exactly (each
    worker keeps its own cursor), which keeps policy comparisons honest; one worker proxies far
    more MQTT traffic than the brokers behind it take.  ``--base-id`` (the admin port) keeps the
    shared-memory regions of several Envoys on one host apart.
    """
    return [
        "-c",
        str(topo.files.envoy_bootstrap if uses_ads(topo) else topo.files.envoy_config),
        "--concurrency",
        "1",
        "--log-level",
        "warning",
        "--base-id",
        str(topo.envoy_admin.port),
    ]


def initial_endpoints(topo: Topology) -> list[Endpoint]:
    """Every node at the neutral weight: the EDS snapshot Envoy starts from."""
    neutral = topo.settings.params.policy.neutral_weight
    return [Endpoint(node=n.name, host=n.ip, port=n.port, weight=neutral) for n in topo.nodes]


# ------------------------------------------------------------------ Prometheus and Alertmanager
def rule_params(params: Params, webhook_url: str) -> Params:
    """``params`` for a stack's rule files: a ``runbook_base_url`` left unset becomes ``<webhook_url>/runbooks``
    (the webhook serves the shipped runbooks there without a credential, :mod:`mqttlb.webhook.runbooks`), so
    every alert's ``runbook_url`` opens from Alertmanager or a browser; one the stack file sets is kept.
    ``webhook_url``: the webhook as a browser on the stack's host reaches it (``scheme://host:port``)."""
    if params.runbook_base_url is not None:
        return params
    return params.model_copy(update={"runbook_base_url": webhook_url + runbooks.PREFIX})


def _job(
    name: str,
    targets: list[str],
    metrics_path: str = "/metrics",
    token_file: Path | None = None,
    basic_auth: dict[str, str] | None = None,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """One scrape job; ``token_file``: the bearer token the target requires (Prometheus reads the file);
    ``basic_auth``: Prometheus's ``basic_auth`` block instead; ``ca_file``: scrape over HTTPS, checking
    the target's certificate against this CA."""
    job: dict[str, Any] = {"job_name": name, "metrics_path": metrics_path, "static_configs": [{"targets": targets}]}
    if ca_file is not None:
        job |= {"scheme": "https", "tls_config": {"ca_file": ca_file}}
    if token_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    if basic_auth is not None:
        job["basic_auth"] = basic_auth
    return job


def stack_ca(topo: Topology) -> str | None:
    """With ``tls: true``, the CA file every client of the stack's HTTP parts checks them against; else None."""
    return str(topo.state.tls_ca) if topo.settings.tls else None


def web_login(topo: Topology) -> dict[str, str]:
    """The stack's web user as Prometheus's and amtool's ``basic_auth`` block (password read from its file)."""
    return {"username": WEB_USER, "password_file": str(topo.state.web_password)}


def web_client_auth(topo: Topology) -> ClientAuth:
    """How mqttlb's own clients (webhook, runner, mqttlb test-alert) call Prometheus and Alertmanager."""
    ca = stack_ca(topo)
    login = BasicAuth(username=WEB_USER, password_file=topo.state.web_password)
    return ClientAuth(basic_auth=login, ca_file=Path(ca) if ca is not None else None)


def web_config(password_hash: str, topo: Topology | None = None) -> dict[str, Any]:
    """Prometheus's and Alertmanager's ``--web.config.file`` (exporter-toolkit): every API and page behind
    basic auth of WEB_USER, whose bcrypt hash is ``password_hash``; with ``topo``'s ``tls: true``, HTTPS with
    the stack's server certificate (``tls_server_config``)."""
    config: dict[str, Any] = {"basic_auth_users": {WEB_USER: password_hash}}
    if topo is not None and topo.settings.tls:
        config = {
            "tls_server_config": {"cert_file": str(topo.state.tls_cert), "key_file": str(topo.state.tls_key)},
            **config,
        }
    return config


def amtool_config(topo: Topology) -> dict[str, Any]:
    """amtool's ``--http.config.file``: the stack's web login."""
    ca = stack_ca(topo)
    return {"basic_auth": web_login(topo), **({"tls_config": {"ca_file": ca}} if ca is not None else {})}


def prometheus_config(topo: Topology) -> dict[str, Any]:
    """prometheus.yml: every mqttlb part scraped at its reach address, rules, Alertmanager."""
    cfg, ca, exporters = topo.settings, stack_ca(topo), topo.state.exporter_token
    jobs = [
        _job(contract.JOB_PROMETHEUS, [topo.prometheus.reach], basic_auth=web_login(topo), ca_file=ca),
        _job(contract.JOB_BROKERS, [topo.broker_exporter.reach], token_file=exporters, ca_file=ca),
        _job(contract.JOB_ENVOY_EXPORTER, [topo.envoy_exporter.reach], token_file=exporters, ca_file=ca),
        _job(contract.JOB_ENVOY, [topo.envoy_admin.reach], "/stats/prometheus"),
        _job(contract.JOB_ALERTMANAGER, [topo.alertmanager.reach], basic_auth=web_login(topo), ca_file=ca),
        _job(contract.JOB_WEBHOOK, [topo.webhook.reach], token_file=topo.state.webhook_token, ca_file=ca),
    ]
    if topo.switches.brokers == "hivemq":
        targets = [urlsplit(n.metrics_url).netloc for n in topo.nodes if n.metrics_url is not None]
        jobs.append(_job(HIVEMQ_JOB, targets, HIVEMQ_METRICS_PATH))
    return {
        "global": {
            "scrape_interval": cfg.scrape_interval,
            "evaluation_interval": cfg.scrape_interval,
            "scrape_timeout": cfg.scrape_interval,
        },
        "rule_files": [str(topo.files.prometheus_rules / "*.yml")],
        "alerting": {
            "alertmanagers": [
                {
                    "static_configs": [{"targets": [topo.alertmanager.reach]}],
                    "basic_auth": web_login(topo),
                    **({"scheme": "https", "tls_config": {"ca_file": ca}} if ca is not None else {}),
                }
            ]
        },
        "scrape_configs": jobs,
    }


def _prometheus_family_args(config: Path, data: tuple[str, Path], service: Service, web: Path) -> list[str]:
    """The flags Prometheus and Alertmanager share: config file, data folder (``data``: each one's flag for
    it and the folder), listen address and ``--web.config.file`` (basic auth on every API and page)."""
    data_flag, data_dir = data
    return [
        f"--config.file={config}",
        f"{data_flag}={data_dir}",
        f"--web.listen-address={service.listen}",
        f"--web.config.file={web}",
    ]


def prometheus_args(topo: Topology) -> list[str]:
    files = topo.files
    data = ("--storage.tsdb.path", files.prometheus_data)
    shared = _prometheus_family_args(files.prometheus_config, data, topo.prometheus, topo.state.prometheus_web)
    # POST /-/reload and /-/quit only when the stack file asks (reload: SIGHUP, Stack.signal_component)
    lifecycle = ["--web.enable-lifecycle"] if topo.settings.prometheus_lifecycle_api else []
    return [*shared, "--storage.tsdb.retention.time=2d", *lifecycle]


def alertmanager_wiring(topo: Topology) -> dict[str, Any]:
    """The keyword arguments of `mqttlb.alertmanager_config.build`/`render` that depend on the stack."""
    ca = stack_ca(topo)
    return {
        "webhook_url": topo.webhook.url("/alerts"),
        "token_file": str(topo.state.webhook_token),
        **({"ca_file": ca} if ca is not None else {}),
    }


def alertmanager_config(topo: Topology) -> dict[str, Any]:
    """alertmanager.yml as a dict (write it with `mqttlb.alertmanager_config.render`)."""
    return build_alertmanager_config(topo.settings.params, **alertmanager_wiring(topo))


def alertmanager_args(topo: Topology) -> list[str]:
    files = topo.files
    data = ("--storage.path", files.alertmanager_data)
    shared = _prometheus_family_args(files.alertmanager_config, data, topo.alertmanager, topo.state.alertmanager_web)
    return [*shared, "--cluster.listen-address="]  # a single Alertmanager: no gossip port


# ------------------------------------------------------------------ exporters and webhook
def broker_exporter_config(topo: Topology) -> dict[str, Any]:
    """The broker exporter's YAML: one entry per node, read the way its broker kind allows."""
    cfg = topo.settings
    nodes = []
    for node in topo.nodes:
        entry: dict[str, Any] = {"name": node.name, "kind": topo.switches.brokers, "address": node.address}
        if node.pid_file is not None:
            entry["pid_file"] = str(node.pid_file)
        if node.metrics_url is not None:
            entry["metrics_url"] = node.metrics_url
        entry["cpu_cores"] = cfg.node_cpu_cores
        nodes.append(entry)
    return {
        "listen": topo.broker_exporter.listen,
        "cluster": cfg.cluster,
        "cluster_label": cfg.params.mqtt_cluster_label,
        "scrape_timeout_seconds": EXPORTER_SCRAPE_TIMEOUT_SECONDS,
        "sys_interval_seconds": cfg.sys_interval,
        "nodes": nodes,
    }


def exporter_web_args(topo: Topology) -> list[str]:
    """The exporters' ``--web-*`` arguments: /metrics requires the stack's exporter token (and, with
    ``tls: true``, is served over HTTPS with the stack's server certificate)."""
    tls = ["--web-tls-cert-file", str(topo.state.tls_cert), "--web-tls-key-file", str(topo.state.tls_key)]
    return ["--web-token-file", str(topo.state.exporter_token), *(tls if topo.settings.tls else [])]


def broker_exporter_args(topo: Topology) -> list[str]:
    """``mqttlb`` subcommand and arguments."""
    return ["broker-exporter", "--config", str(topo.files.broker_exporter_config), *exporter_web_args(topo)]


def envoy_exporter_args(topo: Topology) -> list[str]:
    """``mqttlb`` subcommand and arguments."""
    return [*envoy_exporter_command(topo.envoy_exporter.listen, topo.envoy_admin.url()), *exporter_web_args(topo)]


def envoy_exporter_command(listen: str, admin_url: str, timeout: float = EXPORTER_SCRAPE_TIMEOUT_SECONDS) -> list[str]:
    """``mqttlb`` subcommand and arguments of an Envoy exporter serving /metrics at ``listen``
    (``host:port``) that reads Envoy's admin API at ``admin_url`` within ``timeout`` seconds."""
    return ["envoy-exporter", "--listen", listen, "--envoy-admin", admin_url, "--timeout", str(timeout)]


def _webhook_node(topo: Topology, node: BrokerNode) -> dict[str, Any]:
    """One node of the webhook's config, with how to reach its eviction side (``mqttlb.brokers.control``):
    the Mosquitto plugin over MQTT, or the mqttlb HiveMQ extension's API with the nodes' token file.
    HiveMQ nodes without the mqttlb extension (the compose stack's image) get no eviction block."""
    entry: dict[str, Any] = {"name": node.name, "host": node.ip, "port": node.port}
    if topo.switches.brokers == "mosquitto":
        entry["eviction"] = {"kind": "mosquitto"}
    elif node.api_url is not None:
        entry["eviction"] = {"kind": "hivemq", "url": node.api_url, "token_file": str(topo.state.hivemq_token)}
    return entry


def web_client(topo: Topology) -> dict[str, Any]:
    """The webhook's ``prometheus_auth`` / ``alertmanager_auth``: the web login, and the CA with ``tls: true``."""
    ca = stack_ca(topo)
    return {"basic_auth": web_login(topo), **({"ca_file": ca} if ca is not None else {})}


def webhook_params(params: Params, lb_policy: str, *, exclude_none: bool = True) -> dict[str, Any]:
    """The webhook's parameters as JSON, with ``policy.base_policy`` = the Envoy ``lb_policy`` the stack runs
    (the stack file's ``lb_policy`` is the one source; the weights are computed for it); unset keys (None)
    left out unless ``exclude_none`` is False."""
    data = params.model_dump(mode="json", exclude_none=exclude_none)
    data["policy"]["base_policy"] = lb_policy
    return data


def webhook_config(topo: Topology) -> dict[str, Any]:
    """The webhook's YAML (`mqttlb.webhook.config.WebhookConfig`)."""
    cfg, ads = topo.settings, uses_ads(topo)
    return {
        "listen": topo.webhook.listen,
        "cluster": cfg.cluster,
        "envoy_cluster": cfg.envoy_cluster,
        "envoy_admin": topo.envoy_admin.url(),
        "prometheus_url": topo.prometheus.url(),
        "eds_path": str(topo.state.eds_file),
        "overload_file": str(topo.state.pressure_file),
        "token_file": str(topo.state.webhook_token),
        # Envoy's REST EDS client cannot send a header (ApiConfigSource has none): with eds=rest (tests only;
        # no stack uses it) the webhook serves EDS without a credential.  gRPC ADS sends the xDS token; file, none.
        **({"open_routes": ["eds"]} if topo.switches.eds == "rest" else {}),
        "state_file": str(topo.state.webhook_state),
        "audit_log": str(topo.state.webhook_audit),
        "dry_run": cfg.dry_run,
        "nodes": [_webhook_node(topo, n) for n in topo.nodes],
        "scrape_interval": cfg.scrape_interval,
        "alertmanager_urls": [topo.alertmanager.url()],
        "prometheus_auth": web_client(topo),
        "alertmanager_auth": web_client(topo),
        **({"tls": {"cert_file": str(topo.state.tls_cert), "key_file": str(topo.state.tls_key)}} if cfg.tls else {}),
        "params_overrides": webhook_params(cfg.params, cfg.lb_policy),
        **({"xds_grpc_listen": topo.webhook_xds.listen, "xds_token_file": str(topo.state.xds_token)} if ads else {}),
    }


def webhook_args(topo: Topology) -> list[str]:
    """``mqttlb`` subcommand and arguments."""
    return ["webhook", "--config", str(topo.files.webhook_config)]
