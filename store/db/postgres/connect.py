"""How a fleet node talks to PostgreSQL: the options of its connections, its pool, and which errors are faults."""

import contextlib

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from store.db.faults import StorageUnreachable
from store.db.postgres import schema

CONNECT_SECONDS = 5
POOL_SIZE = 12  # four transfers with chunks in flight, readers, and the node's chores
POOL_WAIT_SECONDS = 3  # a write waits this long for a connection, then pauses (the database is gone)
CHANNEL = "bgfetch"  # what the nodes NOTIFY each other on, and LISTEN to
# PostgreSQL down or restarting, a connection cut, a lock held too long: a pause, not a failure
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.errors.TransactionRollback, psycopg_pool.PoolTimeout)


def connection_options(node: str, lease_seconds: float) -> dict:
    """What every connection of a node is opened with: the schema, rows as dicts, and bounds. A
    transaction left open by a node that stopped (SIGSTOP, a partition) is ended by the server
    well before its lease runs out, so its locks never keep another node from claiming; a lock
    is waited for that long at most."""
    idle_ms = int(max(1.0, lease_seconds / 2) * 1000)
    return {
        "options": f"-c search_path={schema.SCHEMA} -c idle_in_transaction_session_timeout={idle_ms}"
                   f" -c lock_timeout={idle_ms}",
        "application_name": f"bgfetch node {node}",
        "connect_timeout": CONNECT_SECONDS,
        "row_factory": dict_row,
    }


def pool(conninfo: str, options: dict) -> psycopg_pool.AsyncConnectionPool:
    """The node's pool, opened later (`await pool.open(...)`); a connection is checked as it is
    taken, so that one cut by a restart of the database is replaced rather than failing a write."""
    return psycopg_pool.AsyncConnectionPool(
        conninfo, kwargs=options, min_size=2, max_size=POOL_SIZE, open=False, timeout=POOL_WAIT_SECONDS,
        check=psycopg_pool.AsyncConnectionPool.check_connection, name="bgfetch",
    )


@contextlib.contextmanager
def faults(where: str):
    """DATABASE_ERRORS raised inside become StorageUnreachable, naming the database (`where`)."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise StorageUnreachable(f"PostgreSQL {where} does not answer: {one_line(exc)}") from exc


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
