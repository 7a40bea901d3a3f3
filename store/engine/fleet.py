"""What the other nodes of a fleet do, told to this node's store: events, URLs, and transfers to take or leave.

A storage shared by several nodes (PostgreSQL, `store.db.postgres`) tells its `Watcher` what
the others did; this one brings it to the node's `service.Store`: readers wake, subscribers
hear the events (the webhook only hears the node's own), the proxy learns the URLs; this node
takes over the transfers no node runs and stops those another node took over or ended.
"""

import asyncio

from store.engine.lifecycle import EVENT_OF


class FleetWatcher:
    """The `storage.Watcher` of one node's store."""

    def __init__(self, store) -> None:
        self.store = store
        self._stopping: set[asyncio.Task] = set()  # transfers another node took over, being stopped

    def changed_elsewhere(self, reg_id: str, event: str) -> None:
        store = self.store
        store.notify()
        if event == "bytes":
            store.events.progress(reg_id)
        elif event == "delete":
            self.lost(reg_id)
            for listener in store.removal_listeners:
                listener(1)
        else:
            if event in ("create", "update"):
                for record in store.storage.records(reg_id):
                    for listener in store.url_listeners:
                        listener(record.url)
            if event in EVENT_OF:
                self.lost(reg_id)
            store.events.publish(EVENT_OF.get(event, "progress"), reg_id, own=False)

    def unclaimed(self, reg_id: str) -> None:
        """No node runs `reg_id`'s transfer: run it here (the first node to claim it wins)."""
        if reg_id not in self.store.transfers.tasks:
            self.store.transfers.start(reg_id)

    def lost(self, reg_id: str) -> None:
        """Another node runs `reg_id` now (or ended it): stop this node's transfer of it."""
        if reg_id in self.store.transfers.tasks:
            task = asyncio.create_task(self.store.transfers.stop(reg_id), name=f"bgfetch stop {reg_id}")
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def reloaded(self) -> None:
        """Everything was read again: readers look again."""
        self.store.notify()

    async def close(self) -> None:
        await asyncio.gather(*self._stopping, return_exceptions=True)
