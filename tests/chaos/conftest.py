"""The chaos suite uses the integration fixtures (the real broker and database)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(INTEGRATION))

_spec = importlib.util.spec_from_file_location("integration_fixtures",
                                               INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

db_engine = _fixtures.db_engine
group_id = _fixtures.group_id
kafka_admin = _fixtures.kafka_admin
layout = _fixtures.layout
migrated = _fixtures.migrated
topics = _fixtures.topics
