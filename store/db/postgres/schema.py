"""The fleet's PostgreSQL schema, in one place: tables, triggers, and the migrations run at every start.

Everything lives in the schema `bgfetch`, so a database may hold other programs' tables too;
a `bgfetch` schema that is not ours (no `bgfetch.migrations`) is refused before anything is
written. Migrations run in one transaction under an advisory lock: when several nodes start at
once, one migrates and the others wait, then find nothing left to do.

- `registrations`: as in SQLite, plus `seq` (creation order), `version` (grows with every
  update: a node's copy in memory takes a row only when it is newer) and the transfer's lease:
  `lease_node` runs it until `lease_until`, and `lease_token` (the fencing token) grows with
  every claim; a chunk is committed only under the token its writer claimed.
- `records`: as in SQLite, plus `version` and `registration_seq` (the `seq` of its registration:
  a late row of a record whose registration was replaced under the same id is told apart).
- `renewals`: a record's next generation (a new entity its origin sent on revalidation), stored
  beside the one it serves until it is complete (as SQLite's).
- `chunks`: where each committed piece of a body is: an object of the bucket (`object` is its
  key), `size` bytes at `offset` of a generation of the record's body.
- `doomed_objects`: objects to delete from the bucket. A chunk's object is written there first
  (`since` in the future: its writer may still commit it), and leaves it when its chunk is
  committed; a deleted chunk's object goes back there at once (a trigger). So an object whose
  writer died or lost its lease, or whose chunk was deleted, is deleted in the end, and none
  that a chunk names.
"""

import psycopg

from store.db.locations import Unopenable

SCHEMA = "bgfetch"
MIGRATION_LOCK = 0x62674653_0001  # pg_advisory_xact_lock key of migrations ("bgFS", 1)

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", """
CREATE TABLE bgfetch.registrations (
    seq bigserial NOT NULL UNIQUE,
    id text PRIMARY KEY,
    title text NOT NULL DEFAULT '',
    icons text NOT NULL DEFAULT '[]',
    download_total bigint,
    upload_total bigint NOT NULL DEFAULT 0,
    uploaded bigint NOT NULL DEFAULT 0,
    state text NOT NULL DEFAULT 'pending',
    result text NOT NULL DEFAULT '',
    failure_reason text NOT NULL DEFAULT '',
    last_error text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    owner text NOT NULL DEFAULT '',
    version bigint NOT NULL DEFAULT 0,
    lease_node text,
    lease_token bigint NOT NULL DEFAULT 0,
    lease_until timestamptz
);
CREATE INDEX registrations_active ON bgfetch.registrations (state) WHERE state != 'done';
CREATE TABLE bgfetch.records (
    id bigserial PRIMARY KEY,
    registration_id text NOT NULL REFERENCES bgfetch.registrations(id) ON DELETE CASCADE,
    registration_seq bigint NOT NULL,
    idx integer NOT NULL,
    method text NOT NULL DEFAULT 'GET',
    url text NOT NULL,
    credential text NOT NULL DEFAULT '',
    request_headers text,
    request_body bytea,
    body_hash text NOT NULL DEFAULT '',
    integrity text,
    status integer,
    response_headers text,
    size bigint,
    stored bigint NOT NULL DEFAULT 0,
    received bigint NOT NULL DEFAULT 0,
    generation integer NOT NULL DEFAULT 0,
    complete boolean NOT NULL DEFAULT false,
    revalidate text NOT NULL DEFAULT '',
    reusable boolean NOT NULL DEFAULT true,
    selecting text NOT NULL DEFAULT '',
    version bigint NOT NULL DEFAULT 0,
    UNIQUE (registration_id, idx)
);
CREATE INDEX records_by_url ON bgfetch.records (url, credential);
CREATE TABLE bgfetch.renewals (
    record_id bigint PRIMARY KEY REFERENCES bgfetch.records(id) ON DELETE CASCADE,
    generation integer NOT NULL,
    status integer NOT NULL,
    response_headers text NOT NULL,
    size bigint,
    stored bigint NOT NULL DEFAULT 0,
    selecting text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bgfetch.chunks (
    record_id bigint NOT NULL REFERENCES bgfetch.records(id) ON DELETE CASCADE,
    generation integer NOT NULL,
    "offset" bigint NOT NULL,
    size bigint NOT NULL,
    object text NOT NULL,
    PRIMARY KEY (record_id, generation, "offset")
);
CREATE TABLE bgfetch.doomed_objects (
    object text PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX doomed_objects_by_time ON bgfetch.doomed_objects (since);

CREATE FUNCTION bgfetch.next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END $$;
CREATE TRIGGER registrations_version BEFORE UPDATE ON bgfetch.registrations
    FOR EACH ROW EXECUTE FUNCTION bgfetch.next_version();
CREATE TRIGGER records_version BEFORE UPDATE ON bgfetch.records
    FOR EACH ROW EXECUTE FUNCTION bgfetch.next_version();

CREATE FUNCTION bgfetch.doom_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bgfetch.doomed_objects (object) SELECT object FROM gone
        ON CONFLICT (object) DO UPDATE SET since = now();
    RETURN NULL;
END $$;
CREATE TRIGGER chunks_doom AFTER DELETE ON bgfetch.chunks
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION bgfetch.doom_objects();
"""),
    # A rule's or header's most connections for the body (SQLite's m010); a fleet's node still
    # fetches each body over one connection (`Storage.parts`), but keeps what was asked.
    ("m002_segments", "ALTER TABLE bgfetch.records ADD COLUMN segments integer NOT NULL DEFAULT 0"),
]


class NotOurs(Unopenable):
    """The database has a `bgfetch` schema that bgfetch did not make; it is left alone."""


async def migrate(conn: psycopg.AsyncConnection, where: str) -> list[str]:
    """Bring the schema up to date (in one transaction, under the migration lock); the
    migrations applied now. NotOurs, naming `where`, for a `bgfetch` schema not made by bgfetch."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        ours = await (await conn.execute("SELECT to_regclass('bgfetch.migrations')")).fetchone()
        exists = await (await conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", [SCHEMA])).fetchone()
        if exists and ours[0] is None:
            raise NotOurs(f"{where} is not a bgfetch database: it has a schema {SCHEMA!r} that bgfetch did not make;"
                          " bgfetch left it unchanged")
        await conn.execute("CREATE SCHEMA IF NOT EXISTS bgfetch")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bgfetch.migrations (name text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {name for (name,) in await (await conn.execute("SELECT name FROM bgfetch.migrations")).fetchall()}
        for name, sql in MIGRATIONS:
            if name not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO bgfetch.migrations (name) VALUES (%s)", [name])
                applied_now.append(name)
    return applied_now
