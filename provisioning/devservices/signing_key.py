"""The local setup's token signing key: an RSA key under the dev folder, and its JWKS.

The API verifies tokens against the JWKS only (`PROVISIONING_AUTH_JWKS_FILE`); the private key
stays on the developer's machine and signs what `provisioning token` prints. Production points
the API at the identity provider's JWKS instead and never has a private key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KEY_ID = "provisioning-dev-1"


@dataclass(frozen=True, slots=True)
class DevSigningKey:
    folder: Path

    @property
    def private_key_file(self) -> Path:
        return self.folder / "dev-signing-key.pem"

    @property
    def jwks_file(self) -> Path:
        return self.folder / "jwks.json"

    def ensure(self) -> DevSigningKey:
        """Create the key pair once; later calls keep it, so issued tokens stay valid."""
        if self.private_key_file.exists() and self.jwks_file.exists():
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(self.private_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=KEY_ID, use="sig", alg="RS256")
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}, indent=2) + "\n")
        return self

    def private_key_pem(self) -> bytes:
        return self.private_key_file.read_bytes()
