"""The SCRAM principals of a secure local cluster: one per role, with generated passwords.

`dev up --secure` generates a password per role once (kept in `principals.json`, readable by
its owner only) and registers every credential with the cluster (SCRAM-SHA-512), as the
broker identity over the broker-to-broker listener, so no password is ever passed on a
command line. `dev env --role R` prints a role's credentials; nothing logs them.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from provisioning.acls import SERVICE_ROLES, default_principal
from provisioning.devservices.process import DevServiceError

DEV_PARTICIPANT = "entity-management"  # the one Kafka participant of the local cluster
DEV_ROLES = (*SERVICE_ROLES, f"participant:{DEV_PARTICIPANT}")
SCRAM_ITERATIONS = 8192


def role_named(name: str) -> str:
    """A role as a person types it: `participant` is the local cluster's participant."""
    role = f"participant:{DEV_PARTICIPANT}" if name == "participant" else name
    if role not in DEV_ROLES:
        raise DevServiceError(f"no role {name!r}; roles are {', '.join(DEV_ROLES)}")
    return role


@dataclass(frozen=True, slots=True)
class Credentials:
    role: str
    username: str
    password: SecretStr


@dataclass(frozen=True, slots=True)
class DevPrincipals:
    file: Path

    def ensure(self) -> list[Credentials]:
        """Every role's credentials, generating the missing passwords (kept across restarts)."""
        stored = self._read()
        changed = False
        for role in DEV_ROLES:
            if role not in stored:
                stored[role] = secrets.token_urlsafe(24)
                changed = True
        if changed:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(stored, handle, indent=2)
        return [self._credentials(role, stored[role]) for role in DEV_ROLES]

    def of(self, role: str) -> Credentials:
        stored = self._read()
        if role not in stored:
            raise DevServiceError(f"no credentials for {role} in {self.file}; run "
                                  "`provisioning dev up --secure` first")
        return self._credentials(role, stored[role])

    def register(self, admin: AdminClient, timeout_s: float = 60.0) -> None:
        """Create or update every role's SCRAM-SHA-512 credential on the cluster (an upsert:
        the same passwords again change nothing for the clients)."""
        upserts = [
            UserScramCredentialUpsertion(
                c.username, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                c.password.get_secret_value().encode())
            for c in self.ensure()]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                futures = admin.alter_user_scram_credentials(upserts, request_timeout=30)
                for future in futures.values():
                    future.result()
                return
            except KafkaException as exc:
                # A cluster that has just started may not have elected its controller yet.
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise DevServiceError(f"registering the SCRAM users failed: "
                                          f"{exc.args[0].str()}") from None
                time.sleep(1)

    def _read(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.file.read_text()))
        except FileNotFoundError:
            return {}

    @staticmethod
    def _credentials(role: str, password: str) -> Credentials:
        return Credentials(role, default_principal(role).removeprefix("User:"),
                           SecretStr(password))
