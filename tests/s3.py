"""An S3-compatible server on loopback for tests: moto's server in its own process.

`loopback_s3()` starts it on a free port, creates a bucket and yields an `S3` with what a DVC
remote needs (endpoint, bucket, credentials as environment variables); on exit it stops the
process and checks that nothing listens on the port any more.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

# moto accepts any credentials; these only keep boto from looking for real ones.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sena-test", "AWS_SECRET_ACCESS_KEY": "sena-test",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str]
    process: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def stored(self) -> tuple[int, int]:
        """(objects, bytes) in the bucket."""
        count = size = 0
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            count += len(page.get("Contents", []))
            size += sum(obj["Size"] for obj in page.get("Contents", []))
        return count, size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def loopback_s3(bucket: str = "sena-store", timeout_s: float = 60.0) -> Iterator[S3]:
    port = _free_port()
    env = {**os.environ, **CREDENTIALS}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not _listening(port):
            assert process.poll() is None, f"moto's server exited with {process.returncode}"
            assert time.monotonic() < deadline, f"moto's server did not listen on port {port} in {timeout_s} s"
            time.sleep(0.1)
        s3 = S3(f"http://127.0.0.1:{port}", bucket, {**env, "NO_PROXY": "127.0.0.1"}, process)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not _listening(port), f"something still listens on port {port} after moto's server stopped"
