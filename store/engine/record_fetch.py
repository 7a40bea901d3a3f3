"""One record's transfer: the request (resuming when it can), the answer's meaning, the body into storage.

Errors are sorted here, as httpx maps httpcore's: transport trouble becomes `Pause`, what no
retry can fix becomes `Failure` (`outcomes`). The answer's meaning is `decision.decide`'s; this
module applies it in one place (`_apply`). A record whose response had neither a strong ETag
nor Last-Modified is never resumed: nothing could tell a changed entity from the same one, so
it is asked for whole, and a `200` replaces the stored bytes.
"""

import base64
from collections.abc import Callable

import httpx

from store.db import Record, Storage, variants
from store.engine import decision, freshness, headers
from store.engine.outcomes import Failure, Limit, Pause, transport_problem
from store.engine.sink import BodySink


def validator(fields: list) -> str | None:
    """What `If-Range` may carry: a strong ETag, else Last-Modified."""
    etag = headers.first(fields, "etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.first(fields, "last-modified")


def limit_for(storage: Storage, quota: int | None, record: Record, held: int) -> Limit | None:
    """The tighter of downloadTotal and the store's quota (`held`: what the others hold), for this record."""
    limits = []
    if (room := storage.download_room(record.registration_id, record.id)) is not None:
        limits.append(Limit(room, "download-total-exceeded", "downloadTotal"))
    if quota is not None:
        limits.append(Limit(quota - held, "quota-exceeded", "bgfetch_quota"))
    return min(limits, key=lambda limit: limit.most, default=None)


class RecordFetch:
    """Fetches records into `storage` with `client`; `committed(reg_id, progress)` is told of every commit."""

    def __init__(self, storage: Storage, client: httpx.AsyncClient, quota: int | None,
                 committed: Callable[[str, bool], None]) -> None:
        self.storage = storage
        self.client = client
        self.quota = quota
        self.committed = committed

    async def run(self, record: Record) -> None:
        """Fetch what is missing of `record`'s body; Pause, Failure or a StorageFault when it cannot."""
        if record.stored and record.stored == record.size:  # whole when the store stopped, not yet marked
            await self._complete(record, record.stored)
            return
        fields = headers.upstream(record.request_headers)
        check = validator(record.response_headers) if record.stored else None
        if check:
            fields += [("Range", f"bytes={record.stored}-"), ("If-Range", check)]
        fields.append(("Accept-Encoding", "identity"))
        sink = None
        try:
            async with self.client.stream(record.method, record.url, headers=fields, content=record.request_body) as response:
                sink, size, limit = await self._accept(record, response, resumed=bool(check))
                if sink.offset != size:
                    async for data in response.aiter_raw():
                        if limit and sink.position + len(data) > limit.most:
                            raise limit.failure(record.url)
                        await sink.write(data)
        except httpx.TransportError as exc:
            raise transport_problem(record.url, exc) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # too many redirects, a bad URL
            raise Failure("fetch-error", f"{record.url}: {exc}") from exc
        finally:
            if sink is not None:
                await sink.close()
        if size is not None and sink.offset != size:
            raise Pause(f"{record.url}: body ended at {sink.offset} of {size} bytes")
        await self._complete(record, sink.offset)

    async def _accept(self, record: Record, response: httpx.Response, resumed: bool) -> tuple[BodySink, int | None, Limit | None]:
        """The sink the body goes into, its complete size, and the limit it must stay under."""
        action = decision.decide(
            record.url, record.stored if resumed else 0, record.size, response.status_code,
            response.headers.get("content-range"), response.headers.get("content-length"),
        )
        fields = freshness.dated(list(response.headers.multi_items()))
        generation, held = await self._apply(record, action, response.status_code, fields)
        offset = action.offset if isinstance(action, decision.Append) else 0
        limit = self._limit(record, held)
        if limit and action.size is not None and action.size > limit.most:
            raise limit.failure(record.url)
        sink = BodySink(self.storage, record.id, generation, offset, lambda: self.committed(record.registration_id, True))
        return sink, action.size, limit

    async def _apply(self, record: Record, action: decision.Action, status: int, fields: list) -> tuple[int, int]:
        """Carry out `action` on the stored record: (the generation bytes go to, bytes held by the others)."""
        match action:
            case decision.Append():
                return record.generation, self.storage.held(record.id) if self.quota is not None else 0
            case decision.Replace(size=size):
                generation = await self.storage.restart_record(record.id) if record.stored else record.generation
                reusable = freshness.reusable(record.url, status, fields, bool(record.credential))
                selecting = variants.selecting(fields, record.request_headers)
                held = await self.storage.set_response(
                    record.id, status, fields, size, reusable, selecting, count_held=self.quota is not None)
                self.committed(record.registration_id, self._uploaded(record))
                return generation, held
            case decision.StartOver(reason=reason):
                await self.storage.restart_record(record.id)
                self.committed(record.registration_id, False)
                raise Pause(reason)
            case decision.KeepAndPause(reason=reason):
                raise Pause(reason)
            case decision.BadStatus():
                await self.storage.set_response(record.id, status, fields, None)
                self.committed(record.registration_id, self._uploaded(record))
                raise Failure("bad-status", f"{record.url} answered {status}")

    @staticmethod
    def _uploaded(record: Record) -> bool:
        """Whether the response that just came counted the record's request body as uploaded
        (then a progress event tells it)."""
        return record.status is None and bool(record.request_body)

    def _limit(self, record: Record, held: int) -> Limit | None:
        return limit_for(self.storage, self.quota, record, held)

    async def _complete(self, record: Record, size: int) -> None:
        if record.integrity:
            digest = await self.storage.digest(record.id, size)
            if base64.b64encode(digest).decode() != record.integrity.removeprefix("sha256-"):
                raise Failure("fetch-error", f"{record.url}: body does not match integrity {record.integrity}")
        await self.storage.complete_record(record.id)
        self.committed(record.registration_id, False)
