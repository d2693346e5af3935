"""The Alertmanager webhook receiver that rebalances Envoy endpoints by CPU."""
