"""Starts the torch sidecar process, watches it, and restarts it when it dies.

With ``address`` given, the sidecar is one started elsewhere (another host, a container) and
is only connected to. Otherwise a child process is started on a Unix socket in a private
temporary folder; when it exits for any reason (a crash, an out-of-memory kill, ``kill -9``)
its running jobs fail with a clear error and a new one is started, with a back-off if it
keeps dying at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc

from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import sidecar_pb2_grpc

log = logging.getLogger(__name__)


class Sidecar:
    """A connection to the sidecar, and its process when this server owns it."""

    def __init__(
        self,
        address: str | None = None,
        *,
        device: str | None = None,
        slots: int = 0,
        max_message_bytes: int = 256 << 20,
        on_restart: Callable[[int | None], None] | None = None,
    ):
        self.external = address
        self.device = device
        self.slots_requested = slots
        self.max_message_bytes = max_message_bytes
        self.on_restart = on_restart or (lambda code: None)
        self.process: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: sidecar_pb2_grpc.SidecarStub | None = None
        self.status: spb.StatusReply | None = None
        self.ready = asyncio.Event()
        self.generation = 0  # bumps at every (re)start: jobs of an older generation died with it
        self.restarts = 0
        self._folder = tempfile.TemporaryDirectory(prefix="impasto-sidecar-")
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else (self.status.pid if self.status else None)

    @property
    def slots(self) -> int:
        return self.status.slots if self.status else max(1, self.slots_requested)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sidecar-supervisor")
        await asyncio.wait_for(self.ready.wait(), timeout=120)

    async def _connect(self, address: str) -> None:
        options = [("grpc.max_send_message_length", self.max_message_bytes),
                   ("grpc.max_receive_message_length", self.max_message_bytes)]
        if self.channel is not None:
            await self.channel.close()
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = sidecar_pb2_grpc.SidecarStub(self.channel)
        self.status = await self.stub.Status(spb.StatusRequest(), wait_for_ready=True, timeout=90)

    async def _run(self) -> None:
        backoff = 0.5
        while not self._closing:
            if self.external:
                try:
                    await self._connect(self.external)
                except grpc.aio.AioRpcError as e:
                    log.warning("sidecar at %s unreachable (%s); retrying", self.external, e.code().name)
                    await asyncio.sleep(2)
                    continue
                self.generation += 1
                self.ready.set()
                return  # an external sidecar is not ours to restart; calls fail with UNAVAILABLE if it dies
            socket = Path(self._folder.name) / f"sidecar-{self.generation + 1}.sock"
            command = [sys.executable, "-m", "impasto.runtime.sidecar", "--listen", f"unix:{socket}"]
            if self.device:
                command += ["--device", self.device]
            if self.slots_requested:
                command += ["--slots", str(self.slots_requested)]
            self.process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL, env=os.environ.copy())
            started = asyncio.get_running_loop().time()
            try:
                await self._connect(f"unix:{socket}")
            except (grpc.aio.AioRpcError, asyncio.TimeoutError) as e:
                log.error("sidecar did not come up (%s)", e)
                self.process.kill()
            else:
                self.generation += 1
                self.ready.set()
                log.info("sidecar pid %d ready (%s, %d slot(s))", self.process.pid, self.status.device, self.status.slots)
            code = await self.process.wait()
            self.ready.clear()
            if self._closing:
                return
            self.restarts += 1
            log.error("sidecar pid %d exited with code %s; restarting", self.process.pid, code)
            self.on_restart(code)
            backoff = 0.5 if asyncio.get_running_loop().time() - started > 30 else min(backoff * 2, 30)
            await asyncio.sleep(backoff)

    async def close(self) -> None:
        self._closing = True
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except asyncio.TimeoutError:
                self.process.kill()
        if self._task:
            self._task.cancel()
        if self.channel is not None:
            await self.channel.close()
        self._folder.cleanup()
