"""impasto's model endpoint side by side with NVIDIA Triton, on the same ONNX file and the same client load.

Triton here is PyTriton (PyPI's ``nvidia-pytriton``: the real ``tritonserver`` binary with a Python
callable as the model), serving the exported ``model.onnx`` through an ONNX Runtime session,
with dynamic batching set as in the exported config.pbtxt (max batch, preferred sizes, queue
delay). impasto serves the same repository with ``impasto serve``. Both servers run at once and
the cells alternate between them, so a change in the machine's load hits both. One client loop, the one in
``load`` (``tritonclient.grpc`` ModelInfer, batch 1 per request, one client per thread), drives
both at 1, 8 and 32 concurrent clients; the table gives requests/s, p50 and p99 latency, the mean
batch each server formed, and impasto's ratios to Triton from the same run.

    python benchmarks/vs_triton.py [--seconds 15] [--clients 1,8,32] [--model renderer_oil]

PyTriton pins numpy<2, so it runs from its own venv (``.venv-triton``, made by ``.ci/run``): this
script starts it there as ``python benchmarks/vs_triton.py --serve-pytriton ...``. The servers are
subprocesses on this machine, and the clients share its cores with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32,
         "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_}


def read_config(folder: Path):
    """The model's config.pbtxt as Triton's ModelConfig message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def serve_pytriton(folder: Path, grpc_port: int, http_port: int, metrics_port: int) -> None:
    """Serve ``folder``'s model.onnx on PyTriton until SIGTERM (runs inside the .venv-triton python)."""
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    from tritonclient.grpc import model_config_pb2 as pb

    # Triton's Python-backend stub links "libpython3.11.so.1.0" by soname; let it find this interpreter's,
    # not a system one of another patch level (whose C runtime may lack what this stdlib calls).
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    config = read_config(folder)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in config.output]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs)))

    def tensors(entries) -> list:
        return [Tensor(name=e.name, dtype=NUMPY[pb.DataType.Name(e.data_type)], shape=tuple(e.dims)) for e in entries]

    batching = config.dynamic_batching
    with Triton(config=TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                                    exit_timeout_secs=2),
                # statistics open, as on impasto: PyTriton puts it (and more) behind a token by default
                security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
        triton.bind(
            model_name=config.name, infer_func=infer, inputs=tensors(config.input), outputs=tensors(config.output),
            config=ModelConfig(max_batch_size=config.max_batch_size, batcher=DynamicBatcher(
                max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
                preferred_batch_size=list(batching.preferred_batch_size))),
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_ready(address: str, model: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving {model}")
        try:
            if client.is_model_ready(model):
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{model} not ready on {address} after {timeout:.0f} s")


def start_pytriton(folder: Path, python: Path) -> tuple[subprocess.Popen, str]:
    grpc_port, http_port, metrics_port = free_ports(3)
    proc = subprocess.Popen([str(python), __file__, "--serve-pytriton", str(folder), str(grpc_port), str(http_port),
                             str(metrics_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"127.0.0.1:{grpc_port}"
    wait_ready(address, folder.name, proc)
    return proc, address


def start_impasto(repo: Path) -> tuple[subprocess.Popen, str]:
    from server import start_server  # benchmarks/server.py: `impasto serve` with its address parsed

    proc, address = start_server(str(repo))
    return proc, address


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM and wait; past 30 s, SIGKILL (PyTriton's whole session: tritonserver is its child)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)


def load(address: str, model: str, inputs: dict[str, np.ndarray], clients: int, seconds: float) -> dict:
    """``clients`` threads calling ModelInfer back to back for ``seconds``: rate, p50/p99 ms, mean batch."""
    import tritonclient.grpc as triton

    def tensors() -> list:
        out = []
        for name, array in inputs.items():
            t = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array)
            out.append(t)
        return out

    def stats() -> tuple[int, int]:
        s = triton.InferenceServerClient(address).get_inference_statistics(model).model_stats[0]
        return s.inference_count, s.execution_count

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker() -> None:
        try:
            client = triton.InferenceServerClient(address)
            request = tensors()
            client.infer(model, request)  # warm the connection
        except Exception as e:
            errors.append(f"warm-up: {e}")
            barrier.abort()
            return
        barrier.wait()
        mine = []
        try:
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                client.infer(model, request)
                mine.append(time.perf_counter() - t)
        except Exception as e:  # counted: a benchmark that hides failures measures nothing
            with lock:
                errors.append(str(e))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    before = stats()
    stop_at[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        raise RuntimeError(f"clients could not start on {address}: {errors[:1]}") from None
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = stats()
    q = np.percentile(latencies, [50, 99]) * 1e3
    return {"rate": len(latencies) / elapsed, "p50": float(q[0]), "p99": float(q[1]), "errors": len(errors),
            "batch": (after[0] - before[0]) / max(after[1] - before[1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="load per cell")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--model", default="renderer_oil")
    ap.add_argument("--triton-python", type=Path, default=ROOT / ".venv-triton" / "bin" / "python",
                    help="a python with nvidia-pytriton and onnxruntime (default: .venv-triton)")
    args = ap.parse_args()
    if not args.triton_python.is_file():
        sys.exit(f"benchmarks/vs_triton.py: no {args.triton_python}; `.ci/run` makes it (or pass --triton-python)")
    from tritonclient.grpc import model_config_pb2

    from impasto.export.pipeline import export_model

    counts = [int(c) for c in args.clients.split(",")]
    print(f"{platform.node()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        export_model(args.model, repo, fp16=False, seed=0)
        folder = repo / args.model
        config = read_config(folder)
        rng = np.random.default_rng(0)
        inputs = {e.name: rng.random((1, *e.dims)).astype(NUMPY[model_config_pb2.DataType.Name(e.data_type)])
                  for e in config.input}
        results: dict[str, dict[int, dict]] = {"impasto": {}, "Triton": {}}
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:  # both up at once (each idles at well under 1% CPU), cells interleaved: drift hits both alike
            servers["impasto"] = start_impasto(repo)
            servers["Triton"] = start_pytriton(folder, args.triton_python)
            for c in counts:
                for server, (_, address) in servers.items():
                    results[server][c] = load(address, args.model, inputs, c, args.seconds)
        finally:
            for proc, _ in servers.values():
                stop(proc)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.seconds:g} s per cell, "
          f"model {args.model}, gRPC, batch 1 per request\n")
    print("| clients | server | requests/s | p50 ms | p99 ms | mean batch | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for c in counts:
        for server in ("impasto", "Triton"):
            r = results[server][c]
            print(f"| {c} | {server} | {r['rate']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['batch']:.1f} | {r['errors']} |")
    print("\n| clients | impasto / Triton requests/s | impasto / Triton p99 | goal met |")
    print("|---:|---:|---:|---|")
    for c in counts:
        a, b = results["impasto"][c], results["Triton"][c]
        met = a["rate"] >= b["rate"] and a["p99"] < b["p99"]
        print(f"| {c} | {a['rate'] / b['rate']:.2f}x | {a['p99'] / b['p99']:.2f}x | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve-pytriton":
        serve_pytriton(Path(sys.argv[2]), *(int(p) for p in sys.argv[3:6]))
    else:
        main()
