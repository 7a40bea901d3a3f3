"""The engine: registrations, their lifecycle, transfers, events and the webhook.

The web layer imports what this module exports (and `service.Store`); storage is reached only
through the contract of `store.db`.
"""

from store.db import BodyLost, Conflict, NotFound, NotPaused, Record, StorageFault
from store.engine.admission import QuotaExceeded
from store.engine.lifecycle import LifecycleError

__all__ = ["BodyLost", "Conflict", "LifecycleError", "NotFound", "NotPaused", "QuotaExceeded", "Record", "StorageFault"]
