"""Throwaway TLS material for tests: a CA, a server certificate for 127.0.0.1/localhost and a
client certificate, all signed by that CA and written as PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from provisioning.devservices.kafka_tls import (
    certificate_authority,
    key_pem,
    pem,
    signed_certificate,
)


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # a CA that signed none of the above
    other_client_cert: Path  # a client certificate from the other CA
    other_client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = certificate_authority("test CA")
    other_key, other_cert = certificate_authority("some other CA")
    server_key, server_cert = signed_certificate(ca_key, ca_cert, "127.0.0.1", server=True)
    client_key, client_cert = signed_certificate(ca_key, ca_cert, "provisioning-worker",
                                                 client=True)
    stranger_key, stranger_cert = signed_certificate(other_key, other_cert, "stranger",
                                                     client=True)

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    return TlsFiles(
        ca_cert=write("ca.crt", pem(ca_cert)),
        server_cert=write("server.crt", pem(server_cert)),
        server_key=write("server.key", key_pem(server_key)),
        client_cert=write("client.crt", pem(client_cert)),
        client_key=write("client.key", key_pem(client_key)),
        other_ca_cert=write("other-ca.crt", pem(other_cert)),
        other_client_cert=write("stranger.crt", pem(stranger_cert)),
        other_client_key=write("stranger.key", key_pem(stranger_key)),
    )


def server_context(files: TlsFiles, *, require_client_cert: bool = True) -> ssl.SSLContext:
    """A TLS server's context: presents the server certificate and, when asked, accepts only
    clients whose certificate the test CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(files.ca_cert)
    return context
