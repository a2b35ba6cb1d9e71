"""The Postgres projection of the events topic: where every request stands, and its audit trail.

Data flow: `provisioning.events` -> `projector` (its own consumer group) -> `fold` (pure: one
event onto one request row) -> `store` (batched upserts, one DB transaction per poll batch) ->
the tables and operator views that the API and the CLI read.
"""
