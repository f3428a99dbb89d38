"""Server benchmarks: KServe v2 inference under concurrency, and the cost of a gRPC round trip.

1. ``tritonclient.grpc`` ModelInfer on a renderer (batch 1 per request) from 1, 8 and 32
   concurrent clients (threads, one client each), against a server with dynamic batching
   on and one with it off: requests per second, p50 and p99 latency, mean batch size.
2. A Render call carrying a 1024 x 1024 RGBA u8 raw image (4 MiB) and no strokes, over
   gRPC on loopback, against the same work called in-process (``sidecar.render.render``, what the sidecar runs): the
   difference is what the transport costs.

    python benchmarks/server.py [--seconds 10]

Both servers run as subprocesses on this machine; the clients share its cores with them.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from timing import median_seconds


def start_server(repo: str, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "impasto.runtime.cli", "serve", "--port", "0", "--http-port", "-1",
                             "--repo", repo, *extra], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"gRPC on ([\d.]+:\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}")
    return proc, match[1]


def load(address: str, clients: int, seconds: float) -> tuple[float, float, float, float]:
    import tritonclient.grpc as triton

    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        client = triton.InferenceServerClient(address)
        tensor = triton.InferInput("params", [1, 12], "FP32")
        tensor.set_data_from_numpy(np.random.default_rng(i).random((1, 12), dtype=np.float32))
        client.infer("renderer_oil", [tensor])  # warm the connection
        mine = []
        while time.perf_counter() < stop:
            t = time.perf_counter()
            client.infer("renderer_oil", [tensor])
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    stats = triton.InferenceServerClient(address).get_inference_statistics("renderer_oil").model_stats[0]
    mean_batch = stats.inference_count / max(stats.execution_count, 1)
    q = np.percentile(latencies, [50, 99]) * 1e3
    return len(latencies) / elapsed, float(q[0]), float(q[1]), mean_batch


def round_trip(address: str, repeats: int) -> tuple[float, float]:
    from impasto.runtime.api import studio_pb2 as pb
    from impasto.runtime.client import StudioClient
    from impasto.runtime.sidecar.render import render

    data = np.random.default_rng(0).integers(0, 256, (1024, 1024, 4), dtype=np.uint8).tobytes()
    strokes = '{"format":"impasto.strokes","version":1,"brush":"oil","canvas":{"width":1024,"height":1024},"strokes":[]}'
    request = pb.RenderRequest(strokes_json=strokes, canvas_image=pb.Image(raw=pb.RawImage(
        width=1024, height=1024, channels=4, dtype=pb.DTYPE_U8, data=data)))

    with StudioClient(address) as client:
        remote = median_seconds(lambda: client.stub.Render(request), repeats, warmup=1)
    return median_seconds(lambda: render(request, 16384), repeats, warmup=1), remote


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="load per configuration")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    from impasto.export.pipeline import export_model

    with tempfile.TemporaryDirectory() as repo:
        export_model("renderer_oil", repo, fp16=False, seed=0)
        print("| batching | clients | requests/s | p50 ms | p99 ms | mean batch |")
        print("|---|---:|---:|---:|---:|---:|")
        for batching in (True, False):
            proc, address = start_server(repo, *([] if batching else ["--no-batching"]))
            try:
                for clients in (int(c) for c in args.clients.split(",")):
                    rate, p50, p99, batch = load(address, clients, args.seconds)
                    print(f"| {'on' if batching else 'off'} | {clients} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {batch:.1f} |", flush=True)
                if batching:
                    inproc, remote = round_trip(address, args.repeats)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        print()
        print("| Render, 1024 x 1024 RGBA u8 canvas, no strokes | median ms |")
        print("|---|---:|")
        print(f"| in-process (sidecar render) | {inproc * 1e3:.1f} |")
        print(f"| gRPC on loopback | {remote * 1e3:.1f} |")
        print(f"| transport overhead | {(remote - inproc) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
