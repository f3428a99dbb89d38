"""Models, serving and batch on the command line: ``export``, ``build-engine``, ``models``,
``infer``, ``serve`` and ``batch``.

The pipeline around the ops: feed-forward models exported to ONNX into a Triton-layout
model repository, compiled to TensorRT engines, smoke-tested on a backend, served (gRPC,
HTTP/JSON, KServe v2, with the torch sidecar), and job specs run over many images.
"""

from __future__ import annotations

import argparse
import json

from impasto.runtime.cli import UsageError
from impasto.runtime.cli.outputs import check_folder


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto export``, ``build-engine``, ``infer``, ``serve``, ``batch`` and ``models``."""
    ex = sub.add_parser(
        "export",
        help="export feed-forward models to ONNX (parity-checked, fp16 variant) into a Triton-layout model repository",
        description="torch -> ONNX (opset 18, dynamic batch), parity against torch with ONNX Runtime on fresh random "
        "inputs (fp32 and an fp16 variant), a static TensorRT-compatibility report, then "
        "REPO/MODEL/config.pbtxt and REPO/MODEL/VERSION/model.onnx (+ model.fp16.onnx). "
        "Exportable models: " + ", ".join(_model_names()),
    )
    ex.add_argument("model", nargs="?", help="model to export (see above), or --all")
    ex.add_argument("--all", action="store_true", help="export every shipped feed-forward model")
    ex.add_argument("--skip", action="append", default=[], metavar="MODEL",
                    help="with --all: leave this model out (repeatable), e.g. the VGG-19 models on a test server")
    ex.add_argument("--repo", default=None, help="model repository folder (default: settings, then ./model_repository)")
    ex.add_argument("--checkpoint", default=None, help="weights to export instead of the shipped ones (e.g. from `impasto train renderer`)")
    ex.add_argument("--opset", type=int, default=18, choices=[17, 18], help="ONNX opset (default 18)")
    ex.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the fp16 variant")
    ex.add_argument("--allow-unsupported", action="append", default=[], metavar="OP", help="export even though TensorRT's parser does not support OP (repeatable)")
    ex.add_argument("--model-version", type=int, default=1, help="version folder to write (default 1)")
    ex.add_argument("--seed", type=int, default=None, help="seed of the parity inputs (default: fresh)")
    ex.add_argument("--json", action="store_true", help="print parity figures and the TensorRT report as JSON")
    ex.set_defaults(func=cmd_export)

    be = sub.add_parser(
        "build-engine",
        help="compile an exported model to a TensorRT engine for this GPU (needs tensorrt and an NVIDIA GPU)",
        description="ONNX -> serialized TensorRT engine with the optimisation profile from the model's config.pbtxt, "
        "stored in REPO/MODEL/VERSION/engines/ under a key of GPU compute capability, TensorRT version, precision "
        "and ONNX hash, with a persisted timing cache. An engine built for anything else is rebuilt, never loaded.",
    )
    be.add_argument("model", nargs="?", help="model in the repository, or --all")
    be.add_argument("--all", action="store_true", help="every model in the repository")
    be.add_argument("--repo", default=None, help="model repository folder (default: settings)")
    be.add_argument("--precision", default="fp16", choices=["fp16", "fp32"], help="engine precision (default fp16)")
    be.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default 4)")
    be.add_argument("--force", action="store_true", help="rebuild even if a matching engine is cached")
    be.add_argument("--json", action="store_true", help="print the engine paths as JSON")
    be.set_defaults(func=cmd_build_engine)

    inf = sub.add_parser(
        "infer",
        help="run a repository model on arrays from .npy files (a pipeline's smoke test of a backend)",
        description="Loads MODEL from the repository on the chosen backend and runs one batch: each --input NAME=FILE.npy "
        "is a batch-first array; the outputs are written to OUT.npz. Prints the backend and providers used.",
    )
    inf.add_argument("model", help="model in the repository")
    inf.add_argument("--repo", default=None, help="model repository folder (default: settings)")
    inf.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input array (repeatable)")
    inf.add_argument("-o", "--output", required=True, help=".npz file for the outputs")
    inf.add_argument("--backend", default=None, choices=["auto", "tensorrt", "onnxruntime"], help="backend (default: settings, then auto: TensorRT if usable, else ONNX Runtime)")
    inf.add_argument("--precision", default=None, choices=["fp32", "fp16"], help="graph/engine precision (default: fp16 on TensorRT, fp32 on ONNX Runtime)")
    inf.add_argument("--json", action="store_true", help="print the backend description and output shapes as JSON")
    inf.set_defaults(func=cmd_infer)

    sv = sub.add_parser(
        "serve",
        help="run the server: gRPC (Studio API, KServe v2, health) and HTTP/JSON, with a supervised torch sidecar",
        description="Serves every op (the torch ones in a separate sidecar process that is restarted if it dies), "
        "rendering, and the feed-forward models of a model repository through KServe v2 (tritonclient works unchanged). "
        "HTTP/JSON on --http-port serves the same API, KServe v2 REST and Prometheus /metrics. "
        "Loopback only unless --host says otherwise, which then needs --token, TLS or --insecure. See docs/server.md.",
    )
    sv.add_argument("--host", default=None, help="address to listen on (default: settings, then 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None, help="gRPC port (default 8001)")
    sv.add_argument("--http-port", type=int, default=None, help="HTTP/JSON port (default 8000; -1: none)")
    sv.add_argument("--repo", default=None, help="model repository to serve (default: settings; none if it does not exist)")
    sv.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' (prefer IMPASTO_TOKEN: flags show in ps)")
    sv.add_argument("--token-file", default=None, metavar="FILE",
                    help="named tokens, one 'NAME TOKEN' a line; each principal sees only its own jobs (or IMPASTO_TOKEN_FILE)")
    sv.add_argument("--tls-cert", default=None, help="TLS certificate chain (PEM), with --tls-key")
    sv.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    sv.add_argument("--insecure", action="store_true", help="allow listening beyond loopback without token or TLS")
    sv.add_argument("--sidecar", default=None, metavar="ADDRESS", help="use a sidecar started elsewhere (host:port or unix:/path) instead of starting one")
    sv.add_argument("--device", default=None, help="device of the sidecar's jobs: auto, cpu, cuda, cuda:N")
    sv.add_argument("--slots", type=int, default=0, help="jobs the sidecar runs at once (default 1)")
    sv.add_argument("--max-jobs", type=int, default=None, help="jobs queued + running at most (default 16)")
    sv.add_argument("--result-ttl", type=float, default=None, help="seconds a finished job and its result are kept (default 3600)")
    sv.add_argument("--max-results", type=int, default=None, help="finished jobs kept at most, oldest forgotten first (default 1000)")
    sv.add_argument("--max-result-mb", type=float, default=None,
                    help="MiB of finished jobs' results kept at most, oldest forgotten first (default 512)")
    sv.add_argument("--backend", default=None, choices=["auto", "tensorrt", "onnxruntime"], help="backend for the repository's models")
    sv.add_argument("--no-batching", dest="batching", action="store_false", help="run every inference request alone")
    sv.add_argument("--max-message-mb", type=int, default=None, help="largest request or reply, MiB (default 256)")
    sv.set_defaults(func=cmd_serve)

    ba = sub.add_parser(
        "batch",
        help="run a job spec (any op over many images) locally, on Ray, or as farm chunks",
        description="Expands SPEC (TOML or JSON: op, inputs, output pattern, [params]) into numbered tasks and runs "
        "them: on --workers local processes (default), on a Ray cluster (--ray), or on a running server (--server). "
        "Finished outputs are skipped on a re-run; every write is atomic; failures are recorded and the rest go on. "
        "--items A-B runs one chunk (render farms). See docs/batch.md.",
    )
    ba.add_argument("spec", help="the job spec (.toml or .json)")
    ba.add_argument("--workers", type=int, default=1, help="worker processes or Ray actors (default 1)")
    ba.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on Ray Data: a local Ray instance, or the cluster at ADDRESS (ray://host:10001, auto)")
    ba.add_argument("--items", default=None, metavar="A-B", help="only tasks A..B (0-based, inclusive): a farm task's chunk")
    ba.add_argument("--server", default=None, metavar="HOST:PORT", help="send tasks to a running impasto server's gRPC port")
    ba.add_argument("--token", default=None, help="bearer token for --server (default: IMPASTO_TOKEN)")
    ba.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)")
    ba.add_argument("--device", default=None, help="cpu or cuda (default: settings, then auto)")
    ba.add_argument("--repo", default=None, help="model repository for engine ops such as semantic (default: IMPASTO_REPO)")
    ba.add_argument("--count", action="store_true", help="print the number of tasks and exit (for farm templates)")
    ba.add_argument("--json", action="store_true", help="print a JSON summary")
    ba.set_defaults(func=cmd_batch)

    mo = sub.add_parser(
        "models",
        help="list the models of a repository and the backends that can serve them here",
        description="Reads REPO/*/config.pbtxt with Triton's schema; shows inputs, outputs and batching, "
        "and which backends (tensorrt, onnxruntime) can run on this machine.",
    )
    mo.add_argument("--repo", default=None, help="model repository folder (default: settings)")
    mo.add_argument("--json", action="store_true", help="machine-readable output")
    mo.set_defaults(func=cmd_models)


def _model_names() -> list[str]:
    from impasto.export.registry import model_names

    return model_names()


def _repo(args: argparse.Namespace) -> str:
    from impasto.runtime.config import load_settings

    return args.repo or load_settings().repo


def _pick_models(args: argparse.Namespace, known: list[str], what: str) -> list[str]:
    if args.all and args.model:
        raise UsageError("give a MODEL or --all, not both")
    if args.all:
        if not known:
            raise UsageError(f"no {what} to work on")
        return known
    if args.model is None:
        raise UsageError(f"name a model ({', '.join(known) or 'none available'}) or pass --all")
    return [args.model]


def cmd_export(args: argparse.Namespace) -> int:
    """Each named model to ONNX in the repository, with its parity and TensorRT report."""
    from impasto.export.pipeline import export_model
    from impasto.export.tensorrt import support_summary  # the static check, and whether TensorRT is here
    from tqdm import tqdm

    from impasto.export.registry import get_model

    if args.skip and not args.all:
        raise UsageError("--skip applies to --all: name the model to export instead")
    shipped = [n for n in _model_names() if get_model(n).shipped()]
    unknown = sorted(set(args.skip) - set(shipped))
    if unknown:
        raise UsageError(f"--skip {unknown[0]}: not a shipped model (shipped: {', '.join(shipped)})")
    names = _pick_models(args, [n for n in shipped if n not in args.skip], "exportable models")
    if args.checkpoint and len(names) > 1:
        raise UsageError("--checkpoint applies to one model: name it instead of --all")
    repo, results = _repo(args), []
    steps = 5 if args.fp16 else 4
    with tqdm(total=steps * len(names), desc="export", unit="step", disable=None, leave=False) as bar:
        for name in names:
            def step(text: str, name: str = name) -> None:
                bar.set_postfix_str(f"{name}: {text}")
                bar.update(1)

            result = export_model(
                name, repo, checkpoint=args.checkpoint, opset=args.opset, fp16=args.fp16,
                allow=args.allow_unsupported, version=args.model_version, seed=args.seed, step=step,
            )
            results.append(result.to_dict())
            if not args.json:
                fp16 = (f", fp16 {result.parity_fp16.max_abs:.2g} ({result.fp16_nodes.get('fp16', 0)} fp16 nodes)"
                        if result.parity_fp16 else "")
                tqdm.write(f"{name}: {result.folder} (max error vs torch: fp32 {result.parity.max_abs:.2g}{fp16}; "
                           f"{support_summary(result.compatibility)})")
    if args.json:
        print(json.dumps({"repo": repo, "models": results}, indent=1))
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    """A TensorRT engine for this GPU for each named model of the repository."""
    from impasto.export.repository import list_models, read_model
    from impasto.export.tensorrt import build_engine, import_tensorrt

    repo = _repo(args)
    names = _pick_models(args, list_models(repo), f"models in {repo}")
    import_tensorrt()  # a clear message before any work when TensorRT is absent
    engines = {}
    for name in names:
        engines[name] = str(build_engine(read_model(repo, name), args.precision, args.workspace, args.force))
        if not args.json:
            print(f"{name}: {engines[name]}")
    if args.json:
        print(json.dumps({"engines": engines}, indent=1))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """One batch of .npy inputs through a repository model; the outputs to an .npz."""
    import numpy as np
    from impasto.runtime.atomic import atomic_output
    from impasto.runtime.backends import load_backend

    check_folder(args.output)
    arrays = {}
    for item in args.input:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input must be NAME=FILE.npy, got {item!r}")
        try:
            arrays[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"--input {name}: cannot read {file} as a .npy array: {e}") from None
    backend = load_backend(_repo(args), args.model, args.backend, precision=args.precision)
    outputs = backend.infer(arrays)
    with atomic_output(args.output) as f:
        np.savez(f, **outputs)
    if args.json:
        result = {**backend.describe(), "output": args.output, "shapes": {k: list(v.shape) for k, v in outputs.items()}}
        print(json.dumps(result, indent=1))
    else:
        print(f"wrote {args.output}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    import asyncio
    from pathlib import Path

    from impasto.runtime.config import load_settings
    from impasto.runtime.server.app import ServerConfig, run

    settings = load_settings({"host": args.host, "port": args.port, "http_port": args.http_port, "token": args.token,
                              "max_jobs": args.max_jobs, "result_ttl": args.result_ttl, "max_message_mb": args.max_message_mb,
                              "device": args.device, "backend": args.backend, "repo": args.repo,
                              "token_file": args.token_file, "max_results": args.max_results,
                              "max_result_mb": args.max_result_mb})
    repo = settings.repo if Path(settings.repo).is_dir() else None
    if args.repo and repo is None:
        raise UsageError(f"--repo {args.repo} does not exist (create it with `impasto export --all --repo {args.repo}`)")
    if not 1 <= settings.max_jobs <= 10_000:
        raise UsageError(f"--max-jobs must be between 1 and 10000, got {settings.max_jobs}")
    if not 1 <= settings.max_results <= 1_000_000:
        raise UsageError(f"--max-results must be between 1 and 1000000, got {settings.max_results}")
    if not 0 < settings.max_result_mb <= 1 << 20:  # also refuses NaN
        raise UsageError(f"--max-result-mb must be above 0 and at most {1 << 20}, got {settings.max_result_mb}")
    config = ServerConfig(
        host=settings.host, port=settings.port, http_port=settings.http_port, repo=repo, token=settings.token or None,
        token_file=settings.token_file or None, max_results=settings.max_results,
        max_result_bytes=int(settings.max_result_mb * (1 << 20)),
        tls_cert=args.tls_cert, tls_key=args.tls_key, insecure=args.insecure, sidecar=args.sidecar,
        device=settings.device, slots=args.slots, backend=settings.backend, batching=args.batching,
        max_jobs=settings.max_jobs, result_ttl=settings.result_ttl, max_side=settings.max_side,
        max_message_bytes=settings.max_message_mb << 20, threads=settings.threads,
    )
    try:
        config.check()
    except ValueError as e:
        raise UsageError(str(e)) from None

    def ready(server) -> None:
        http = f", HTTP on {config.host}:{server.http_port}" if server.http_port else ""
        print(f"impasto serving gRPC on {config.host}:{server.grpc_port}{http} "
              f"(sidecar pid {server.sidecar.pid}, {len(server.models.models)} model(s))", flush=True)

    asyncio.run(run(config, ready))
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """A job spec's tasks on a local pool, Ray, or a server; exit 1 if any task failed."""
    import os
    import time

    from impasto.runtime.batch.spec import expand, load_spec, select
    from impasto.runtime.cli.ops import local_device
    from impasto.runtime.config import load_settings
    from tqdm import tqdm

    settings = load_settings({"device": args.device, "token": args.token, "repo": args.repo})
    spec = load_spec(args.spec)
    every = expand(spec)
    if args.count:
        print(len(every))
        return 0
    tasks = select(every, args.items)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    device = local_device(settings.device) if not args.server else "cpu"
    options = {"device": device, "threads": threads, "server": args.server, "token": settings.token or None,
               "max_side": settings.max_side, "vgg_weights": settings.vgg_weights or None,
               "repo": settings.repo, "backend": settings.backend}
    from impasto.runtime.batch.runner import TaskRunner

    TaskRunner(spec, **options)  # bad [params] fail here, before any worker starts
    if args.ray is not None:
        from impasto.runtime.batch.ray_data import run_ray

        results = run_ray(str(spec.path), tasks, args.workers, options, args.ray or None)
    else:
        from impasto.runtime.batch.pool import run_pool

        results = run_pool(str(spec.path), tasks, args.workers, options)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    failures = []
    t0 = time.perf_counter()
    with tqdm(total=len(tasks), desc=f"batch {spec.op}", unit="item", disable=args.json or None) as bar:
        for r in results:
            counts[r.status] += 1
            if r.status == "failed":
                failures.append({"index": r.index, "output": r.output, "error": r.error})
            bar.update(1)
            bar.set_postfix(counts, refresh=False)
    summary = {"spec": str(spec.path), "op": spec.op, "tasks": len(tasks), **counts, "failures": failures,
               "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{len(tasks)} tasks: {counts['done']} done, {counts['skipped']} skipped (already done), "
              f"{counts['failed']} failed ({summary['seconds']:.0f} s)")
        for f in failures[:10]:
            print(f"  failed #{f['index']}: {f['error']}")
    return 1 if failures else 0


def cmd_models(args: argparse.Namespace) -> int:
    """The repository's models (inputs, outputs, batching) and the backends usable here."""
    from impasto.export.repository import list_models, read_model
    from impasto.runtime.backends import available_backends

    repo = _repo(args)
    backends = available_backends()
    models = []
    for name in list_models(repo):
        m = read_model(repo, name)
        models.append({
            "name": m.name, "version": m.version, "max_batch_size": m.max_batch_size,
            "inputs": [t.to_dict() for t in m.inputs],
            "outputs": [t.to_dict() for t in m.outputs],
            "description": m.parameters.get("impasto.description", ""),
        })
    if args.json:
        print(json.dumps({"repo": repo, "models": models, "backends": backends}, indent=1))
        return 0
    for m in models:
        shapes = lambda ts: ", ".join(f"{t['name']} {t['dtype']}{t['dims']}" for t in ts)
        print(f"{m['name']} (v{m['version']}, batch <= {m['max_batch_size']}): {shapes(m['inputs'])} -> {shapes(m['outputs'])}")
    if not models:
        print(f"no models in {repo} (create them with `impasto export --all --repo {repo}`)")
    for b, why in backends.items():
        print(f"backend {b}: {'available' if not why else 'unavailable: ' + why}")
    return 0
