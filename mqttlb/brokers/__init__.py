"""Broker-side components as mqttlb drives them: the eviction interface (`eviction`), the Mosquitto adapter
over the mqttlb plugin's control topic (`mosquitto`) and where that plugin is and how a node loads it
(`mosquitto_plugin`).  The plugin's C source lives in the top-level ``brokers/mosquitto-plugin``."""
