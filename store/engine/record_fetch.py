"""One record's transfer: the request (resuming when it can), the answer's meaning, the body into storage.

Errors are sorted here, as httpx maps httpcore's: transport trouble becomes `Pause`, what no
retry can fix becomes `Failure` (`outcomes`). The answer's meaning is `decision.decide`'s; this
module applies it in one place (`_apply`). A record whose response had neither a strong ETag
nor Last-Modified is never resumed: nothing could tell a changed entity from the same one, so
it is asked for whole, and a `200` replaces the stored bytes. A body that may take several
connections (`segments`) is asked for in parts, each with `Range` and `If-Range`.
"""

import asyncio
import base64
from collections.abc import Callable, Iterator

import httpx

from store.db import Record, Storage, StorageFault, variants
from store.engine import decision, freshness, headers, segments
from store.engine.outcomes import Failure, Limit, Pause, transport_problem
from store.engine.sink import BodySink, chunks_in_flight


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
    """Fetches records into `storage` with `client`; `committed(reg_id, progress)` is told of every
    commit, `fetched(n)` of every `n` body bytes that came from an origin; a body takes up to
    `segments` connections unless its record says otherwise."""

    def __init__(self, storage: Storage, client: httpx.AsyncClient, quota: int | None,
                 committed: Callable[[str, bool], None], fetched: Callable[[int], None] = lambda n: None,
                 segments: int = 1) -> None:
        self.storage = storage
        self.client = client
        self.quota = quota
        self.committed = committed
        self.fetched = fetched
        self.segments = segments
        self.whole_only: set[int] = set()  # records whose origin answered a part with the whole body

    async def run(self, record: Record) -> None:
        """Fetch what is missing of `record`'s body; Pause, Failure or a StorageFault when it cannot."""
        if record.stored and record.stored == record.size:  # whole when the store stopped, not yet marked
            await self._complete(record, record.stored)
            return
        if (missing := await self._missing(record)) is not None:
            await self._parts(record, record.generation, missing, self._connections(record, record.response_headers))
            size = self._whole(record)
        else:
            size = await self._stream(record)
        await self._complete(record, size)

    async def _stream(self, record: Record) -> int:
        """One request for the body, or for what follows its stored bytes; when the answer allows
        parts, this request takes the first and the others start beside it. The body's size."""
        fields = headers.upstream(record.request_headers)
        check = validator(record.response_headers) if record.stored else None
        if check:
            fields += [("Range", f"bytes={record.stored}-"), ("If-Range", check)]
        fields.append(("Accept-Encoding", "identity"))
        sink, parts = None, []
        try:
            async with self.client.stream(record.method, record.url, headers=fields, content=record.request_body) as response:
                sink, size, limit, generation = await self._accept(record, response, resumed=bool(check))
                if sink.offset == 0 and size:
                    parts = segments.split_evenly(size, self._connections(record, list(response.headers.multi_items()), size))
                    sink.in_flight = _share(self.storage, len(parts))
                async with asyncio.TaskGroup() as group:
                    if len(parts) > 1:  # the record as stored now: with the response the parts must match
                        group.create_task(self._parts(self.storage.record(record.id), generation, parts[1:],
                                                      len(parts) - 1))
                    if sink.offset != size:
                        await self._read(record, response, sink, parts[0][1] if len(parts) > 1 else None, limit)
        except Exception as exc:  # also a group of them, from the parts beside this request
            raise _sorted(record.url, exc) from None
        finally:
            if sink is not None:
                await sink.close()
        if len(parts) > 1:
            return self._whole(record)
        if size is not None and sink.offset != size:
            raise Pause(f"{record.url}: body ended at {sink.offset} of {size} bytes", "short-body")
        return sink.offset

    async def _read(self, record: Record, response: httpx.Response, sink: BodySink, stop: int | None,
                    limit: Limit | None) -> None:
        """The response's body into `sink`, up to the byte `stop` (None: its end)."""
        async for data in response.aiter_raw():
            self.fetched(len(data))
            if limit and sink.position + len(data) > limit.most:
                raise limit.failure(record.url)
            if stop is not None and sink.position + len(data) >= stop:
                await sink.write(data[:stop - sink.position])
                return
            await sink.write(data)

    # -- a body in parts -------------------------------------------------------------

    def _connections(self, record: Record, fields: list, size: int | None = None) -> int:
        """How many connections the body may take, by its response's header `fields`."""
        if not self.storage.parts or record.id in self.whole_only:
            return 1
        wanted = record.segments or self.segments
        return segments.connections(wanted, record.size if size is None else size,
                                    headers.first(fields, "accept-ranges"), validator(fields) is not None)

    async def _missing(self, record: Record) -> list[tuple[int, int]] | None:
        """The byte ranges to ask for in parts when resuming; None for one request: nothing is
        stored beyond the contiguous bytes and the body takes one connection, or it cannot."""
        if record.size is None or not record.status or validator(record.response_headers) is None:
            return None
        spans = await self.storage.spans(record.id, record.generation)
        beyond = any(start > record.stored for start, _ in spans)
        if not beyond and (not record.stored or self._connections(record, record.response_headers) == 1):
            return None
        return segments.gaps(spans, record.size)

    async def _parts(self, record: Record, generation: int, parts: list[tuple[int, int]], connections: int) -> None:
        """Each part over a request of its own, `connections` at a time."""
        slots = asyncio.Semaphore(max(1, connections))

        async def one(start: int, end: int) -> None:
            async with slots:
                await self._part(record, generation, start, end, connections)

        try:
            async with asyncio.TaskGroup() as group:
                for start, end in parts:
                    group.create_task(one(start, end))
        except Exception as exc:
            raise _sorted(record.url, exc) from None

    async def _part(self, record: Record, generation: int, start: int, end: int, connections: int) -> None:
        fields = headers.upstream(record.request_headers) + [
            ("Range", f"bytes={start}-{end - 1}"), ("If-Range", validator(record.response_headers) or ""),
            ("Accept-Encoding", "identity")]
        sink = BodySink(self.storage, record.id, generation, start, lambda: self.committed(record.registration_id, True),
                        in_flight=_share(self.storage, connections))
        try:
            async with self.client.stream(record.method, record.url, headers=fields, content=record.request_body) as response:
                action = decision.decide_part(record.url, start, record.size, response.status_code,
                                              response.headers.get("content-range"))
                if not isinstance(action, decision.Append):
                    if isinstance(action, decision.StartOver):
                        self.whole_only.add(record.id)  # the next try asks for the whole body, once
                    await self._apply(record, action, response.status_code, freshness.dated(list(response.headers.multi_items())))
                await self._read(record, response, sink, end, None)
        except Exception as exc:
            raise _sorted(record.url, exc) from None
        finally:
            await sink.close()
        if sink.offset != end:
            raise Pause(f"{record.url}: the part from byte {start} ended at {sink.offset} of {end}", "short-body")

    def _whole(self, record: Record) -> int:
        """The body's size once its parts are all stored; Pause when they left a gap."""
        now = self.storage.record(record.id)
        if now.stored != now.size:
            raise Pause(f"{record.url}: {now.stored} of {now.size} bytes follow each other after the parts", "short-body")
        return now.stored

    async def _accept(self, record: Record, response: httpx.Response,
                      resumed: bool) -> tuple[BodySink, int | None, Limit | None, int]:
        """The sink the body goes into, its complete size, the limit it must stay under, and the
        generation its bytes belong to."""
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
        return sink, action.size, limit, generation

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
                raise Pause(reason, "entity-changed")
            case decision.KeepAndPause(reason=reason):
                raise Pause(reason, "credentials-refused")
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


def _share(storage: Storage, connections: int) -> int:
    """The chunks each of `connections` parts may have waiting for storage: the body's, shared."""
    return max(1, chunks_in_flight(storage) // max(1, connections))


def _sorted(url: str, error: Exception) -> Exception:
    """The one error a try ends with, of those its requests raised (together, from parts side by
    side): a failure first, then a storage fault, then a pause; httpx's errors sorted as
    `outcomes` says (transport trouble pauses, a bad URL or too many redirects fail)."""
    found = list(_leaves(error))
    for kind in (Failure, StorageFault, Pause, httpx.TransportError, httpx.HTTPError, httpx.InvalidURL):
        for exc in found:
            if isinstance(exc, kind):
                if isinstance(exc, httpx.TransportError):
                    return transport_problem(url, exc)
                if isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
                    return Failure("fetch-error", f"{url}: {exc}")
                return exc
    return found[0]


def _leaves(group: BaseException) -> Iterator[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        for exc in group.exceptions:
            yield from _leaves(exc)
    else:
        yield group
