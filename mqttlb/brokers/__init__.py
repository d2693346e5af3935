"""Broker-side components as mqttlb drives them: the eviction interface (`eviction`), the Mosquitto adapter
over the mqttlb plugin's control topic (`mosquitto`), where that plugin is and how a node loads it
(`mosquitto_plugin`), the HiveMQ adapter over the mqttlb extension's HTTP API (`hivemq`) and how a native
HiveMQ CE node is launched (`hivemq_node`), the EMQX adapter over EMQX 5's REST API (`emqx`, no plugin), and
the webhook's per-node ``eviction`` block with the factory that opens the matching adapter (`control`).
The plugin's C source lives in the top-level ``brokers/mosquitto-plugin``, the extension's in ``brokers/hivemq``;
EMQX's side is described in ``docs/emqx.md``."""
