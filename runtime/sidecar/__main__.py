"""``python -m impasto.runtime.sidecar --listen unix:/tmp/impasto.sock``: run a sidecar process."""

from __future__ import annotations

import argparse
import asyncio
import logging

import torch

from impasto.runtime.config import load_settings
from impasto.runtime.sidecar.service import SidecarService, serve
from impasto.train.loops.common import resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m impasto.runtime.sidecar", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="unix:/path/to.sock or HOST:PORT")
    ap.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: settings)")
    ap.add_argument("--slots", type=int, default=0, help="jobs run at once (default 1: one per GPU, one on the CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: settings, then torch's)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s sidecar %(name)s: %(message)s")
    settings = load_settings({"device": args.device, "threads": args.threads})
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = str(resolve_device(settings.device))
    service = SidecarService(device, args.slots or 1, settings.vgg_weights or None)
    try:
        asyncio.run(serve(args.listen, service))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
