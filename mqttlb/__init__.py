"""mqttlb: observability and alert-driven rebalancing for MQTT brokers behind Envoy."""

__version__ = "0.1.0"
