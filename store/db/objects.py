"""Bodies in S3-compatible object storage: put, read a range, delete — boto3's blocking calls on threads of their own.

The event loop never waits on the network: every call of boto3 runs on a small pool of threads
(`THREADS`), and a read hands its bytes over a piece at a time. Errors are sorted at this
boundary: an object that is missing, or shorter than asked, is `BodyLost` (never wrong bytes);
an object store that does not answer is `StorageUnreachable`, a pause for the transfers.
"""

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import boto3
import botocore.config
import botocore.exceptions

from store.db.faults import StorageUnreachable
from store.db.locations import Bodies, Unopenable
from store.db.storage import BodyLost

logger = logging.getLogger(__name__)

THREADS = 8  # PUTs of several transfers, reads of several clients at once
READ_BYTES = 1024 * 1024  # what a read hands over at a time
DELETE_BATCH = 1000  # the most keys one DeleteObjects takes
NETWORK_ERRORS = (botocore.exceptions.BotoCoreError, ConnectionError, TimeoutError)


class ObjectStore:
    """The bucket and prefix of `bodies`, with the given keys (None: boto3's own search: the
    environment's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, its files, ...)."""

    def __init__(self, bodies: Bodies, access_key: str | None = None, secret_key: str | None = None) -> None:
        self.bodies = bodies
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=bodies.endpoint, region_name=bodies.region or "us-east-1",
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, max_pool_connections=THREADS, connect_timeout=5, read_timeout=30,
                retries={"mode": "standard", "max_attempts": 3},
                # only the checksums S3 requires: S3-compatible stores differ in the others they take
                request_checksum_calculation="when_required", response_checksum_validation="when_required",
            ),
        )
        self.threads = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="bgfetch-objects")

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.threads, lambda: fn(*args, **kwargs))

    def _unreachable(self, exc: Exception) -> StorageUnreachable:
        return StorageUnreachable(f"object storage {self.bodies} does not answer: {_one_line(exc)}")

    async def check(self) -> None:
        """Unopenable, naming the bucket and why, unless the bucket is there and ours to write."""
        try:
            await self._call(self.client.head_bucket, Bucket=self.bodies.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = {"404": "no such bucket", "NoSuchBucket": "no such bucket",
                   "403": "access denied (check the access key and secret key)"}.get(code, _one_line(exc))
            raise Unopenable(f"bgfetch_bodies {self.bodies}: {why}") from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise Unopenable(f"bgfetch_bodies {self.bodies}: no credentials (set AWS_ACCESS_KEY_ID and"
                             " AWS_SECRET_ACCESS_KEY, or bgfetch_s3_access_key and bgfetch_s3_secret_key)") from exc
        except NETWORK_ERRORS as exc:
            raise Unopenable(f"bgfetch_bodies {self.bodies}: cannot reach it: {_one_line(exc)}") from exc

    async def put(self, name: str, pieces: list[bytes]) -> None:
        """Write `pieces` as the object `name` (under the prefix); StorageUnreachable when it cannot."""
        try:
            await self._call(self._put, self.bodies.key(name), pieces)
        except (botocore.exceptions.ClientError, *NETWORK_ERRORS) as exc:
            raise self._unreachable(exc) from exc

    def _put(self, key: str, pieces: list[bytes]) -> None:
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)  # on this thread, not the event loop
        self.client.put_object(Bucket=self.bodies.bucket, Key=key, Body=body)

    async def read(self, name: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` up to `end` (exclusive) of the object `name`, READ_BYTES at a time.
        BodyLost when it is missing or holds fewer bytes; StorageUnreachable when the object
        store does not answer."""
        async for data in self.pieces(await self.open(name, start, end)):
            yield data

    async def open(self, name: str, start: int, end: int) -> "Opened":
        """Ask for bytes `start` up to `end` of the object `name` (read them with `pieces`, or
        `close` it): a reader may ask for the next object while it reads this one."""
        key = self.bodies.key(name)
        try:
            response = await self._call(self.client.get_object, Bucket=self.bodies.bucket, Key=key,
                                        Range=f"bytes={start}-{end - 1}")
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "InvalidRange"):
                raise BodyLost(f"object {key} of {self.bodies} is missing or shorter than {end} bytes") from exc
            raise self._unreachable(exc) from exc
        except NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from exc
        return Opened(key, response["Body"], start, end)

    async def pieces(self, opened: "Opened") -> AsyncIterator[bytes]:
        """The bytes of an `open`ed object, READ_BYTES at a time; closes it."""
        pos, end = opened.start, opened.end
        try:
            while pos < end:
                try:
                    data = await self._call(opened.stream.read, min(READ_BYTES, end - pos))
                except NETWORK_ERRORS as exc:
                    raise self._unreachable(exc) from exc
                if not data:
                    raise BodyLost(f"object {opened.key} of {self.bodies} ended at byte {pos}, not {end}")
                pos += len(data)
                yield data
        finally:
            opened.close()

    async def delete(self, names: Iterable[str]) -> list[str]:
        """Delete the objects (missing ones count as deleted); the names deleted.
        StorageUnreachable when the object store does not answer."""
        names = list(names)
        deleted: list[str] = []
        for first in range(0, len(names), DELETE_BATCH):
            batch = names[first:first + DELETE_BATCH]
            keys = {self.bodies.key(name): name for name in batch}
            try:
                answer = await self._call(self.client.delete_objects, Bucket=self.bodies.bucket,
                                          Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
            except (botocore.exceptions.ClientError, *NETWORK_ERRORS) as exc:
                raise self._unreachable(exc) from exc
            failed = {error["Key"] for error in answer.get("Errors", [])}
            if failed:
                logger.warning("object storage kept %d of %d objects it was told to delete", len(failed), len(batch))
            deleted += [name for key, name in keys.items() if key not in failed]
        return deleted

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        self.client.close()


@dataclass
class Opened:
    """An object's bytes `start` up to `end` asked for (`ObjectStore.open`), not yet read."""

    key: str
    stream: object  # botocore's StreamingBody
    start: int
    end: int

    def close(self) -> None:
        self.stream.close()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
