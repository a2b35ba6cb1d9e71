"""`provisioning bench`: throughput, latency and recovery of the engine, side by side with the
raw Kafka ceiling and with DBOS, measured on this machine in one run. Figures, never pass/fail.

    raw.py       confluent-kafka alone: transactional produce + read_committed consume
    engine.py    N sagas through real worker processes (no-op or built-in participants)
    recovery.py  restoring K saga states; kill -9 of a worker under load to the next success
    peer_dbos.py the same five-step workflow as DBOS durable workflows on the same PostgreSQL
    report.py    the JSON file, the chart and the console table
"""
