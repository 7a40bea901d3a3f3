"""Serving a stored response to a proxy client: as stored once fresh enough, or the origin's own answer.

A record that is complete in a successful registration is a stored response: before it is
served its freshness is checked (`Store.freshen`, RFC 9111), which may ask the origin. A record
still downloading is served as it arrives, unchecked.
"""

from tornado.iostream import StreamClosedError

import httpx

from store.engine import headers, revalidation
from store.web.serving import BodyServing


class StoredServing(BodyServing):
    """For the proxy's routes: `serve_stored`."""

    async def serve_stored(self, record_id: int) -> None:
        """Answer a client's request with record `record_id`, checked for freshness first."""
        record = self.store.record(record_id)
        if record.complete and record.method == "GET" and self.request.method in ("GET", "HEAD"):
            if self.store.get(record.registration_id)["result"] == "success":
                outcome = await self.store.freshen(record, list(self.request.headers.get_all()))
                if isinstance(outcome, revalidation.Relay):
                    await self._relay(outcome.response)
                    return
        await self.serve_record(record_id)

    async def _relay(self, response: httpx.Response) -> None:
        """The origin's answer, as it comes (a HEAD gets its header fields only)."""
        try:
            self.set_status(response.status_code, response.reason_phrase or None)
            self._send_fields(headers.relayed(response.headers.multi_items()))
            if self.request.method != "HEAD":
                async for data in response.aiter_raw():
                    self.write(data)
                    await self.flush()
            await self.finish()
        except (StreamClosedError, httpx.HTTPError):  # the client left, or the origin did
            self.request.connection.close()
        finally:
            await response.aclose()
