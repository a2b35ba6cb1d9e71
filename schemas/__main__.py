"""`python -m schemas`: each top-level record with its fingerprint, to check another decoder.

`python -m schemas NAME` prints that record's self-contained schema and its canonical form.
"""

from __future__ import annotations

import json
import sys

from schemas import registry


def main(argv: list[str]) -> int:
    records = registry.current()
    if not argv:
        print(f"{'record':34} {'header bytes 2-9':18} {'as a Java long':>21}")
        for name in sorted(records):
            schema = records[name]
            print(f"{name:34} {schema.fingerprint_bytes.hex():18} {schema.java_fingerprint:>21}")
        return 0
    chosen = records.get(argv[0])
    if chosen is None:
        print(f"no top-level record {argv[0]!r}; known: {', '.join(sorted(records))}",
              file=sys.stderr)
        return 2
    print(json.dumps(chosen.schema, indent=2))
    print(chosen.canonical_form)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
