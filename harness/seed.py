"""A store with many finished background fetches, written straight into its SQLite file.

The tests and the benchmarks need stores of thousands (100,000) of registrations; made through
the proxy that would take minutes. `seed` writes them through the storage layer's own SQL
(`store.db`: the schema, `registrations.create`, `chunks.append`, `records.complete`) in one
transaction, as the store itself would have left them: done, success, one record each with a
small body, a second apart in `createdAt`. Call it before the store opens the file.
"""

import json
import time

from store.db import chunks, records, registrations, schema
from store.db.storage import NewRecord
from store.engine import lifecycle

BODY = b"seeded body\n"


def seed(path: str, count: int, url_prefix: str = "http://seeded.invalid/file-", start: int = 0) -> list[str]:
    """Add `count` successful registrations `seed-<n>` fetching `<url_prefix><n>`; their ids."""
    conn = schema.connect(path)
    made = []
    try:
        schema.migrate(conn)
        conn.execute("BEGIN IMMEDIATE")
        clock = time.time() - count
        fields = [["Content-Type", "text/plain"], ["ETag", '"seeded"']]
        for n in range(start, start + count):
            reg_id = f"seed-{n}"
            registrations.create(conn, {"id": reg_id, "title": f"Seeded {n}", "owner": "api"},
                                 [NewRecord(url=f"{url_prefix}{n}")], lambda *_: False)
            record_id = conn.execute("SELECT id FROM records WHERE registration_id = ?", [reg_id]).fetchone()[0]
            # records.set_response also sums what every record holds (for the quota): not needed here
            conn.execute("UPDATE records SET status = 200, response_headers = ?, size = ? WHERE id = ?",
                         [json.dumps(fields), len(BODY), record_id])
            chunks.append(conn, record_id, 0, 0, [BODY])
            records.complete(conn, record_id)
            for event in ("start", "succeed"):
                registrations.transition(conn, reg_id, event, lifecycle.step)
            conn.execute("UPDATE registrations SET created_at = ?, updated_at = ? WHERE id = ?",
                         [clock + n - start, clock + n - start, reg_id])
            made.append(reg_id)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return made
