"""The REST API (the seed's endpoints): submit commands, look up status and audit trails.

`app.create_app` wires it: `auth` (bearer JWTs -> `Caller`), `bodies` (what callers send),
`publishing` (commands onto the commands topic), `notifications` (Postgres LISTEN: `?wait=`
and the console's live updates), `operator_actions` (which operator action applies, and its
command), `problems` (every error as application/problem+json). Reads go to the projection
tables. `console/` is the operators' web console, served by the same process under /console.
"""
