"""Alembic migrations of the service's database (run them with `provisioning db upgrade`)."""
