"""Exported models: torch eager against ONNX Runtime, latency at batch 1 and throughput at 8 and 32.

Every shipped feed-forward model is exported into a temporary repository (or read from
--repo), then timed in one process: torch eager (inference mode) and the ONNX Runtime
backend on the CPU; with a CUDA GPU also torch CUDA, ONNX Runtime's CUDA provider and,
where installed, TensorRT. Prints a markdown table; the ratio is ONNX Runtime / torch time.

    python benchmarks/export.py [--threads 2] [--repo DIR] [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import torch
from timing import median_seconds

from impasto.export.pipeline import export_model
from impasto.export.registry import get_model
from impasto.export.repository import list_models
from impasto.runtime.backends import available_backends, load_backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", default=None, help="an exported repository (default: export into a temporary one)")
    ap.add_argument("--threads", type=int, default=0, help="threads for torch and ONNX Runtime (default: all cores)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", default="1,8,32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    tmp = None
    repo = args.repo
    if repo is None:
        tmp = tempfile.TemporaryDirectory()
        repo = tmp.name
        from impasto.export.registry import model_names

        for name in model_names():
            export_model(name, repo, seed=0)
    cuda = torch.cuda.is_available()
    trt = cuda and not available_backends()["tensorrt"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CUDA: {torch.cuda.get_device_name() if cuda else 'none'}")
    head = "| model | batch | torch eager CPU ms | ONNX Runtime CPU ms | ORT / torch |"
    if cuda:
        head += " torch CUDA ms | ORT CUDA ms |" + (" TensorRT fp16 ms |" if trt else "")
    print(head)
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if cuda else "") + ("---:|" if trt else ""))
    for name in list_models(repo):
        spec = get_model(name)
        module = spec.build(None)
        cpu = load_backend(repo, name, "onnxruntime", providers=["CPUExecutionProvider"], threads=args.threads)
        gpu_module = copy.deepcopy(module).to("cuda") if cuda else None
        ort_cuda = load_backend(repo, name, "onnxruntime", providers=["CUDAExecutionProvider"]) if cuda else None
        engine = load_backend(repo, name, "tensorrt") if trt else None
        for b in batches:
            inputs = spec.sample(b, torch.Generator().manual_seed(b))
            feed = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
            with torch.inference_mode():
                t_torch = median_seconds(lambda: module(*inputs), args.repeats)
            t_ort = median_seconds(lambda: cpu.infer(feed), args.repeats)
            row = f"| {name} | {b} | {t_torch * 1e3:.2f} | {t_ort * 1e3:.2f} | {t_ort / t_torch:.2f} |"
            if cuda:
                dev = [x.cuda() for x in inputs]

                def torch_cuda():
                    with torch.inference_mode():
                        gpu_module(*dev)
                    torch.cuda.synchronize()

                row += f" {median_seconds(torch_cuda, args.repeats) * 1e3:.2f} | {median_seconds(lambda: ort_cuda.infer(feed), args.repeats) * 1e3:.2f} |"
                if engine is not None:
                    row += f" {median_seconds(lambda: engine.infer(feed), args.repeats) * 1e3:.2f} |"
            print(row, flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
