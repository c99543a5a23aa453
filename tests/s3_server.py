"""A real S3-protocol server for tests: moto's server mode in a process of its own, on a loopback port the OS picks.

Nothing is downloaded and nothing leaves loopback. Credentials are dummies moto accepts;
tests hand them to boto3 through the usual AWS_* variables (`aws_environment`).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "pellucid-test",
    "AWS_SECRET_ACCESS_KEY": "pellucid-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a metadata service for credentials
}
_LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


class MotoServer:
    """`python -m moto.server -H 127.0.0.1 -p 0`; its log (where it prints the port) goes to a file."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "moto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60.0, port: int = 0) -> None:
        """Start on `port` (0: one the OS picks; the port of a server stopped before: the same endpoint again)."""
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(1))
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)  # waiting for another process to print its port: nothing to block on
        self.stop()
        raise RuntimeError(f"moto's server did not start: {self.log.read_text(errors='replace')[-2000:]}")

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"pellucid-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def uri(self, bucket: str, prefix: str = "data") -> str:
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint_url}&region={CREDENTIALS['AWS_DEFAULT_REGION']}"

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
