"""The REST API (the seed's endpoints): submit commands, look up status and audit trails.

`app.create_app` wires it: `auth` (bearer JWTs -> `Caller`), `bodies` (what callers send),
`publishing` (commands onto the commands topic), `finished` (Postgres LISTEN for `?wait=`),
`problems` (every error as application/problem+json). Reads go to the projection tables.
"""
