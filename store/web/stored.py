"""Serving a stored response to a proxy client: as stored once fresh enough, or the origin's own answer.

A record that is complete in a successful registration is a stored response: before it is
served its freshness is checked (`Store.freshen`, RFC 9111), which may ask the origin. A record
still downloading is served as it arrives, unchecked.
"""

from tornado.iostream import StreamClosedError

import httpx

from store.engine import headers, revalidation
from store.proxyside import protocol
from store.web.serving import BodyServing


class StoredServing(BodyServing):
    """For the proxy's routes: `serve_stored`."""

    async def serve_stored(self, record_id: int) -> None:
        """Answer a client's request with record `record_id`, checked for freshness first."""
        record = self.store.record(record_id)
        if not (record.complete and record.method == "GET" and self.request.method in ("GET", "HEAD")
                and self.store.get(record.registration_id)["result"] == "success"):
            await self.serve_record(record_id)  # still arriving: served as it comes
            return
        match await self.store.freshen(record, list(self.request.headers.get_all())):
            case revalidation.Stored(record=record, asked=asked):
                await self.serve_record(record.id, source="revalidated" if asked else None)
            case revalidation.Renewing(record=renewal):  # the new entity, as it arrives
                self.set_header(protocol.ANSWER, protocol.answer_value("renewed", record.registration_id))
                await self.serve_record(renewal.id, renewal.generation, source="origin")
            case revalidation.Relay(response=response):
                self.set_header(protocol.ANSWER, protocol.answer_value("relayed", record.registration_id))
                await self._relay(response)
            case revalidation.Unavailable(reason=reason):
                self.problem(504, "origin-unreachable", reason)

    async def _relay(self, response: httpx.Response) -> None:
        """The origin's answer, as it comes (a HEAD gets its header fields only)."""
        served = self.store.metrics.served_to(self.ROUTE, "origin")
        try:
            self.set_status(response.status_code, response.reason_phrase or None)
            self._send_fields(headers.relayed(response.headers.multi_items()))
            if self.request.method != "HEAD":
                async for data in response.aiter_raw():
                    self.write(data)
                    served.inc(len(data))
                    await self.flush()
            await self.finish()
        except (StreamClosedError, httpx.HTTPError):  # the client left, or the origin did
            self.request.connection.close()
        finally:
            await response.aclose()
