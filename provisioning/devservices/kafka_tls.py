"""TLS material of a secure local Kafka cluster: a CA of its own and one broker certificate.

`dev up --secure` makes them once under the cluster's folder and keeps them, so clients that
trust `ca.crt` keep working across restarts. Every node presents the broker certificate (SANs
127.0.0.1 and localhost) to clients, and also uses it to prove who it is to the other nodes
on the broker-to-broker and controller listeners (mutual TLS): its subject CN,
`kafka-broker`, becomes the principal `User:kafka-broker`, the cluster's super user.
Clients of the service never get that key; they authenticate with SASL/SCRAM and trust the CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BROKER_NAME = "kafka-broker"
VALID_DAYS = 365


@dataclass(frozen=True, slots=True)
class ClusterCertificates:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.folder / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.folder / "broker.key"

    @property
    def broker_keystore(self) -> Path:
        """Key and certificate chain in one PEM file: the brokers' `ssl.keystore.location`."""
        return self.folder / "broker-keystore.pem"

    def ensure(self) -> ClusterCertificates:
        """Create the CA and the broker certificate once; later calls keep them."""
        files = (self.ca_cert, self.ca_key, self.broker_cert, self.broker_key,
                 self.broker_keystore)
        if all(path.exists() for path in files):
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = certificate_authority()
        # A server to clients, and a client to the other nodes (mutual TLS between brokers).
        key, cert = signed_certificate(ca_key, ca_cert, BROKER_NAME, server=True, client=True)
        _write(self.ca_cert, pem(ca_cert))
        _write(self.ca_key, key_pem(ca_key), private=True)
        _write(self.broker_cert, pem(cert) + pem(ca_cert))
        _write(self.broker_key, key_pem(key), private=True)
        _write(self.broker_keystore, key_pem(key) + pem(cert) + pem(ca_cert), private=True)
        return self


def certificate_authority(name: str = "provisioning local Kafka CA",
                          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign certificates but no further CAs."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def signed_certificate(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                       name: str, *, server: bool = False, client: bool = False,
                       ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for `name` signed by the CA: a server's carries the SANs 127.0.0.1 and
    localhost, a client's makes `name` its principal on a mutual-TLS listener."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: what both Kafka's PEM keystore (without ssl.key.password) and
    # librdkafka read; the file itself is readable by its owner only.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
