"""A real ``impasto serve`` subprocess for tests: free loopback ports, its own sidecar."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys


class RunningServer:
    def __init__(self, *args: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "impasto.runtime.cli", "serve", "--port", "0", "--http-port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        line = self.process.stdout.readline()
        match = re.search(r"gRPC on ([\d.]+):(\d+), HTTP on [\d.]+:(\d+) \(sidecar pid (\d+)", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"server did not start: {line}{self.process.stderr.read()}")
        host, grpc_port, http_port, self.sidecar_pid = match[1], match[2], match[3], int(match[4])
        self.grpc = f"{host}:{grpc_port}"
        self.http = f"http://{host}:{http_port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def build_addons(out) -> None:
    """Build the add-on zips with addons/build.py into ``out``, as a user would."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "addons" / "build.py"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
