"""Unit tests of revalidation and renewals (store/engine/revalidation.py, renewal.py) over
httpx.MockTransport: what each answer of the origin makes of a stored response. The same through
a real mitmdump and origin: test_freshness_e2e.py, test_generations_e2e.py."""

import asyncio
import base64
import email.utils
import hashlib
import time

import httpx

from store.engine import revalidation
from tests.test_transfer_loop import Cut, running, start, stored_body, until

URL = "http://origin.test/page"
OLD, NEW = b"old version", b"the new version"


class Origin:
    """A MockTransport handler: `answers` in turn (a status, or an exception to raise), then 200 with NEW."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        date = email.utils.formatdate(time.time(), usegmt=True)
        if answer == "first":
            return httpx.Response(200, headers={"ETag": '"1"', "Cache-Control": "no-cache", "Vary": "Accept"}, stream=Cut(OLD, False))
        if answer == 304:
            return httpx.Response(304, headers={"ETag": '"1"', "Date": date, "Cache-Control": "max-age=60"})
        if answer == 200:
            return httpx.Response(200, headers={"ETag": '"2"', "Date": date, "Cache-Control": "no-cache"}, stream=Cut(NEW, False))
        return httpx.Response(answer, stream=Cut(b"the origin's own answer", False))


async def stored(store, **record):
    await start(store, url=URL, headers=[("Accept", "text/html")], **record)
    await until(store, "f", result="success")
    return store.records("f")[0]


async def check(store, fields=(("Accept", "text/html"),)):
    return await store.freshen(store.records("f")[0], list(fields))


def test_a_304_serves_the_stored_response_with_its_fields_refreshed(tmp_path):
    async def scenario():
        origin = Origin("first", 304)
        async with running(tmp_path, origin) as store:
            record = await stored(store)
            outcome = await check(store)
            assert isinstance(outcome, revalidation.Stored) and outcome.record.generation == record.generation
            assert origin.requests[-1].headers["if-none-match"] == '"1"'
            assert ("cache-control", "max-age=60") in outcome.record.response_headers
            assert isinstance(await check(store), revalidation.Stored) and len(origin.requests) == 2  # fresh now
            assert stored_body(store) == OLD

    asyncio.run(scenario())


def test_an_unreachable_or_failing_origin_serves_the_stored_response(tmp_path):
    async def scenario():
        origin = Origin("first", httpx.ConnectError("refused"), 503, httpx.ReadTimeout("slow"))
        async with running(tmp_path, origin) as store:
            record = await stored(store)
            for _ in range(3):
                outcome = await check(store)
                assert isinstance(outcome, revalidation.Stored) and outcome.record == record

    asyncio.run(scenario())


def test_another_answer_is_relayed_and_the_stored_one_stays(tmp_path):
    async def scenario():
        async with running(tmp_path, Origin("first", 404)) as store:
            await stored(store)
            outcome = await check(store)
            assert isinstance(outcome, revalidation.Relay) and outcome.response.status_code == 404
            assert await outcome.response.aread() == b"the origin's own answer"
            await outcome.response.aclose()
            assert stored_body(store) == OLD

    asyncio.run(scenario())


def test_a_new_entity_becomes_the_next_generation_and_replaces_the_old_one_once_whole(tmp_path):
    async def scenario():
        origin = Origin("first", 200)
        async with running(tmp_path, origin) as store:
            record = await stored(store)
            outcome = await check(store)
            assert isinstance(outcome, revalidation.Renewing) and outcome.record.generation == record.generation + 1
            assert isinstance(await check(store), revalidation.Renewing) or store.records("f")[0].generation > record.generation
            while store.renewals.tasks:
                await store.changed(0.05)
            now = store.records("f")[0]
            assert now.generation == record.generation + 1 and now.complete and stored_body(store) == NEW
            assert ('"2"', 2) == (dict((k.lower(), v) for k, v in now.response_headers)["etag"], len(origin.requests))

    asyncio.run(scenario())


def test_a_request_of_another_variant_is_never_given_the_stored_one(tmp_path):
    async def scenario():
        async with running(tmp_path, Origin("first", httpx.ConnectError("refused"), 304)) as store:
            await stored(store)
            assert store.records("f")[0].selecting == '[["accept", "text/html"]]'
            outcome = await check(store, [("Accept", "application/json")])
            assert isinstance(outcome, revalidation.Unavailable) and "Vary: accept" in outcome.reason
            assert isinstance(await check(store, [("Accept", "application/json")]), revalidation.Stored)  # the origin says it fits

    asyncio.run(scenario())


def test_never_asks_nobody_and_integrity_pins_the_body(tmp_path):
    async def scenario():
        origin = Origin("first", "first")
        for directory in ("never", "pinned"):
            (tmp_path / directory).mkdir()
        async with running(tmp_path / "never", origin, revalidate="never") as store:
            await stored(store)
            assert isinstance(await check(store, [("Accept", "text/html"), ("Cache-Control", "no-cache")]), revalidation.Stored)
        pinned = "sha256-" + base64.b64encode(hashlib.sha256(OLD).digest()).decode()
        async with running(tmp_path / "pinned", origin, revalidate="always") as store:
            await stored(store, integrity=pinned)
            assert isinstance(await check(store), revalidation.Stored)
        assert len(origin.requests) == 2  # the two fetches, no revalidation

    asyncio.run(scenario())
