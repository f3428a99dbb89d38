"""``python -m impasto.runtime.sidecar --listen unix:/tmp/impasto.sock``: run a sidecar process.

Started by ``impasto serve``, it is given the server's pid (``--parent-pid``) and exits as
soon as that process is gone, so a server killed with ``kill -9`` leaves no idle sidecar
behind: on Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``), and
everywhere a watcher thread checks once a second whether the parent is still there.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("impasto.runtime.sidecar")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit when the process ``parent_pid`` (our parent) goes away.

    Linux: ask the kernel for SIGKILL when the parent exits. Everywhere: a daemon thread that
    exits the process once ``os.getppid()`` is no longer ``parent_pid`` (we were re-parented
    because it died). Also exits at once if the parent is already gone.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); relying on the watcher", ctypes.get_errno())
        except (OSError, AttributeError) as e:
            log.warning("prctl unavailable (%s); relying on the watcher", e)

    def gone() -> bool:
        return os.getppid() != parent_pid

    if gone():  # the parent died before the kernel was told to watch it
        os._exit(1)

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        log.warning("the server (pid %d) is gone; the sidecar exits", parent_pid)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m impasto.runtime.sidecar", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="unix:/path/to.sock or HOST:PORT")
    ap.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: settings)")
    ap.add_argument("--slots", type=int, default=0, help="jobs run at once (default 1: one per GPU, one on the CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: settings, then torch's)")
    ap.add_argument("--repo", default=None, help="model repository whose models sidecar ops may run (paint --predict's "
                    "stroke predictor); default: none, the shipped torch weights")
    ap.add_argument("--backend", default="auto", help="auto, tensorrt or onnxruntime, for --repo's models")
    ap.add_argument("--parent-pid", type=int, default=0, help="exit when this process (the server that started us) exits")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s sidecar %(name)s: %(message)s")
    if args.parent_pid:
        die_with_parent(args.parent_pid)  # before the slow imports: a parent killed meanwhile is noticed too

    import asyncio

    import torch

    from impasto.runtime.config import load_settings
    from impasto.runtime.sidecar.service import SidecarService, serve
    from impasto.train.loops.common import resolve_device

    settings = load_settings({"device": args.device, "threads": args.threads})
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = str(resolve_device(settings.device))
    service = SidecarService(device, args.slots or 1, settings.vgg_weights or None, repo=args.repo,
                             backend=args.backend)
    try:
        asyncio.run(serve(args.listen, service))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
