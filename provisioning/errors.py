"""The project's own exceptions.

Library errors (confluent-kafka, fastavro, psycopg, ...) are wrapped at the boundary into these,
so callers handle one vocabulary. `TransientError` marks what is worth retrying; everything else
is permanent.
"""


class ProvisioningError(Exception):
    """Base of every error this service raises on purpose."""


class TransientError(ProvisioningError):
    """A failure that may go away on its own (timeouts, broker or database briefly unavailable)."""


class ConfigurationError(ProvisioningError):
    """Settings or the environment are wrong; retrying will not help."""


class CodecError(ProvisioningError):
    """Bytes could not be encoded to, or decoded from, the Avro wire format."""
