"""The xDS server over TLS and mutual TLS (the webhook's ``tls`` block), with a gRPC client as the Envoy:
a client that trusts the server's certificate gets its snapshot, a plaintext client gets nothing, and
with ``client_ca_file`` only a client presenting a certificate signed by that CA does."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from tlsutil import self_signed

from mqttlb.secure import ServerTls
from mqttlb.webhook.eds import CLA_TYPE, Endpoint, cluster_load_assignment
from mqttlb.webhook.xds_cache import snapshot_of
from mqttlb.webhook.xds_grpc import XdsServer

CLUSTER = "mqtt_brokers"


def first_response(channel: grpc.Channel) -> discovery_pb2.DiscoveryResponse:
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    request = discovery_pb2.DiscoveryRequest(type_url=CLA_TYPE, resource_names=[CLUSTER])
    return next(stub.StreamAggregatedResources(iter([request]), timeout=5))


def serving(tls: ServerTls) -> XdsServer:
    server = XdsServer("127.0.0.1:0", tls=tls)
    server.start()
    endpoints = [Endpoint("node1", "127.0.0.1", 18831, 100)]
    server.set_snapshot(snapshot_of(4, [cluster_load_assignment(CLUSTER, endpoints)]))
    return server


def test_tls_serves_clients_that_trust_the_certificate_only(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = serving(ServerTls(cert_file=cert, key_file=key))
    target = f"127.0.0.1:{server.port}"
    try:
        trusting = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(target, trusting) as channel:
            assert first_response(channel).version_info == "4"
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            first_response(channel)
    finally:
        server.stop()


def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    client_cert, client_key = self_signed(tmp_path, "envoy")  # its own CA
    server = serving(ServerTls(cert_file=cert, key_file=key, client_ca_file=client_cert))
    target = f"127.0.0.1:{server.port}"
    try:
        with_cert = grpc.ssl_channel_credentials(cert.read_bytes(), client_key.read_bytes(), client_cert.read_bytes())
        with grpc.secure_channel(target, with_cert) as channel:
            assert first_response(channel).version_info == "4"
        without = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(target, without) as channel, pytest.raises(grpc.RpcError):
            first_response(channel)
        stranger_cert, stranger_key = self_signed(tmp_path, "stranger")
        other = grpc.ssl_channel_credentials(cert.read_bytes(), stranger_key.read_bytes(), stranger_cert.read_bytes())
        with grpc.secure_channel(target, other) as channel, pytest.raises(grpc.RpcError):
            first_response(channel)
    finally:
        server.stop()


def test_an_unreadable_key_is_one_error_naming_the_file(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    server = XdsServer("127.0.0.1:0", tls=ServerTls(cert_file=cert, key_file=tmp_path / "missing.key"))
    with pytest.raises(OSError, match="missing.key"):
        server.start()
