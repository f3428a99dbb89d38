"""Starts the torch sidecar process, watches it, and restarts it when it dies.

With ``address`` given, the sidecar is one started elsewhere (another host, a container) and
is only connected to. Otherwise a child process is started on a Unix socket in a private
temporary folder; when it exits for any reason (a crash, an out-of-memory kill, ``kill -9``)
its running jobs fail with a clear error and a new one is started, with a back-off if it
keeps dying at start-up. Supervision always converges: a sidecar that dies while it starts
(before it answers) is noticed at once, not after the connection's time-out, and replaced;
an unexpected error in the supervisor is logged and the loop goes on.

The sidecar dies with the server: it is told the server's pid (``--parent-pid``) and exits
when that process is gone (``PR_SET_PDEATHSIG`` on Linux, a watcher elsewhere). The socket
folder names its owner (``owner.pid``); folders whose owner is gone, left by a server that
was killed, are removed when the next server starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from impasto.runtime.api import sidecar_pb2 as spb
from impasto.runtime.api import sidecar_pb2_grpc

log = logging.getLogger(__name__)

FOLDER_PREFIX = "impasto-sidecar-"
OWNER_FILE = "owner.pid"
CONNECT_TIMEOUT = 120.0  # seconds a starting sidecar may take to answer (torch import on a loaded machine)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a zombie is dead: it only waits for its parent to read its exit code
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def clean_stale_folders(root: str | None = None, grace: float = 60.0) -> list[str]:
    """Remove socket folders of sidecars whose server is gone; returns the folders removed.

    A folder whose ``owner.pid`` names a process that no longer exists is stale. One without
    the file is stale only once it is older than ``grace`` seconds (a server that was killed
    before writing it, or one from an older version), so a server starting right now keeps its own.
    """
    removed = []
    root_path = Path(root or tempfile.gettempdir())
    try:
        candidates = [p for p in root_path.iterdir() if p.name.startswith(FOLDER_PREFIX)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            owner_file = folder / OWNER_FILE
            if owner_file.exists():
                stale = not _pid_alive(int(owner_file.read_text().strip() or 0))
            else:
                stale = time.time() - folder.stat().st_mtime > grace
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
            log.info("removed stale sidecar folder %s", folder)
    return removed


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
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        repo: str | None = None,
        backend: str = "auto",
    ):
        self.external = address
        self.device = device
        # the served model repository: a sidecar op that can use an engine model (paint --predict's stroke
        # predictor) runs it from there, on the same backend kind as the server's
        self.repo, self.backend = repo, backend
        self.slots_requested = slots
        self.max_message_bytes = max_message_bytes
        self.on_restart = on_restart or (lambda code: None)
        self.on_state = on_state  # awaited with True when a sidecar is ready, False when it is gone
        self.process: asyncio.subprocess.Process | None = None
        self.channel: grpc.aio.Channel | None = None
        self.stub: sidecar_pb2_grpc.SidecarStub | None = None
        self.status: spb.StatusReply | None = None
        self.ready = asyncio.Event()
        self.generation = 0  # bumps at every (re)start: jobs of an older generation died with it
        self.restarts = 0
        self._folder: tempfile.TemporaryDirectory | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else (self.status.pid if self.status else None)

    @property
    def slots(self) -> int:
        return self.status.slots if self.status else max(1, self.slots_requested)

    def alive(self) -> bool:
        """Ready, and (for a sidecar of ours) its process has not exited."""
        return self.ready.is_set() and (self.process is None or self.process.returncode is None)

    async def start(self) -> None:
        """Start supervising; returns once the first sidecar answers (TimeoutError after 120 s)."""
        if not self.external:
            clean_stale_folders()
            self._folder = tempfile.TemporaryDirectory(prefix=FOLDER_PREFIX)
            (Path(self._folder.name) / OWNER_FILE).write_text(str(os.getpid()))
        self._task = asyncio.create_task(self._supervise(), name="sidecar-supervisor")
        await asyncio.wait_for(self.ready.wait(), timeout=CONNECT_TIMEOUT)

    async def _set_state(self, ready: bool) -> None:
        if ready:
            self.ready.set()
        else:
            self.ready.clear()
        if self.on_state is not None:
            try:
                await self.on_state(ready)
            except Exception:
                log.exception("sidecar state callback failed")

    async def _connect(self, address: str) -> None:
        options = [("grpc.max_send_message_length", self.max_message_bytes),
                   ("grpc.max_receive_message_length", self.max_message_bytes)]
        if self.channel is not None:
            await self.channel.close()
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.stub = sidecar_pb2_grpc.SidecarStub(self.channel)
        self.status = await self.stub.Status(spb.StatusRequest(), wait_for_ready=True, timeout=CONNECT_TIMEOUT)

    async def _supervise(self) -> None:
        """Run :meth:`_run` for ever: an unexpected error is logged, the process killed, and the loop restarted."""
        while not self._closing:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sidecar supervisor failed; starting over")
                if self.process is not None and self.process.returncode is None:
                    self.process.kill()
                await self._set_state(False)
                await asyncio.sleep(1)

    async def _connect_or_exit(self, address: str) -> bool:
        """Connect to our starting sidecar; False as soon as its process exits (or after the time-out)."""
        connect = asyncio.ensure_future(self._connect(address))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            done, _ = await asyncio.wait({connect, exited}, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            if not connect.done():
                connect.cancel()
                try:
                    await connect
                except (asyncio.CancelledError, Exception):
                    pass
        if connect in done:
            try:
                connect.result()
            except (grpc.aio.AioRpcError, asyncio.TimeoutError) as e:
                log.error("sidecar pid %d did not come up (%s)", self.process.pid, e)
                return False
            return self.process.returncode is None
        if self.process.returncode is None:
            log.error("sidecar pid %d did not answer within %.0f s", self.process.pid, CONNECT_TIMEOUT)
        return False

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
                await self._set_state(True)
                return  # an external sidecar is not ours to restart; calls fail with UNAVAILABLE if it dies
            socket = Path(self._folder.name) / f"sidecar-{self.generation + 1}.sock"
            command = [sys.executable, "-m", "impasto.runtime.sidecar", "--listen", f"unix:{socket}",
                       "--parent-pid", str(os.getpid())]
            if self.device:
                command += ["--device", self.device]
            if self.slots_requested:
                command += ["--slots", str(self.slots_requested)]
            if self.repo:
                command += ["--repo", self.repo, "--backend", self.backend]
            self.process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL, env=os.environ.copy())
            started = asyncio.get_running_loop().time()
            if await self._connect_or_exit(f"unix:{socket}"):
                self.generation += 1
                await self._set_state(True)
                log.info("sidecar pid %d ready (%s, %d slot(s))", self.process.pid, self.status.device, self.status.slots)
            elif self.process.returncode is None:
                self.process.kill()
            code = await self.process.wait()
            await self._set_state(False)
            socket.unlink(missing_ok=True)
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
        if self._folder is not None:
            self._folder.cleanup()
