"""The project's own exceptions.

Library errors (confluent-kafka, fastavro, psycopg, ...) are wrapped at the boundary into these,
so callers handle one vocabulary. `TransientError` marks what is worth retrying; everything else
is permanent.

The codec's errors are the contract's own (`schemas.errors`, which imports nothing of the
service, so other services can vendor `schemas/` alone): `CodecError` here *is*
`schemas.errors.CodecError`, and every `except CodecError` of the service catches what the
codec raises. They are not `ProvisioningError`s; a boundary that reports every error of ours
catches `ProvisioningError` and `SchemaError`.
"""

from schemas.errors import CodecError, SchemaError

__all__ = ["CodecError", "ConfigurationError", "DevServiceError", "ProvisioningError",
           "SchemaError", "TransientError"]


class ProvisioningError(Exception):
    """Base of every error this service raises on purpose (the codec's: see `SchemaError`)."""


class TransientError(ProvisioningError):
    """A failure that may go away on its own (timeouts, broker or database briefly unavailable)."""


class ConfigurationError(ProvisioningError):
    """Settings or the environment are wrong; retrying will not help."""


class DevServiceError(Exception):
    """A local development service could not be started or stopped; the message is one line
    for a person. Defined here, not with the services (`provisioning.devservices`, which loads
    the Kafka client and cryptography), so the command line can catch it without loading them
    on every start."""
