"""The ``impasto`` command line: one subcommand per job, ``impasto SUBCOMMAND --help`` for each."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("impasto")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _add_paint_arguments(pa: argparse.ArgumentParser) -> None:
    """The options of a painting, shared by `impasto paint` and `impasto client paint`."""
    pa.add_argument("--brush", default="oil", help="oil (default), marker, watercolor or tape")
    pa.add_argument("--strokes", type=int, default=500, help="strokes in total over all levels (default 500)")
    pa.add_argument("--levels", type=int, default=5, help="levels of the progressive search (default 5)")
    pa.add_argument("--size", type=int, default=512, help="longer side of the output in px (default 512)")
    pa.add_argument("--iterations", type=int, default=20, help="optimisation steps per stroke (default 20; 0 = the reference's 500 / strokes per patch)")
    pa.add_argument("--lr", type=float, default=0.002, help="RMSprop learning rate (default 0.002)")
    pa.add_argument("--renderer", default="exact", choices=["neural", "exact"], help="differentiable renderer for the search: the exact engine (default, faster and better here) or the shipped neural renderer")
    pa.add_argument("--patch", type=int, default=64, help="px a patch is searched at (default 64; larger is slower and finer)")
    pa.add_argument("--ot", action="store_true", help="add the optimal-transport loss (weight 0.1, the reference's): pulls strokes toward targets they do not overlap yet")
    pa.add_argument("--ot-weight", type=float, default=None, help="weight of the optimal-transport loss (implies --ot)")
    pa.add_argument("--style", default=None, metavar="STYLE.png", help="a style image: after each level, its strokes are restyled toward it (VGG-19 Gram matrices)")
    pa.add_argument("--style-mode", default="color", choices=["color", "all"], help="restyle colours only (default; shapes stay) or every parameter")
    pa.add_argument("--style-weight", type=float, default=100.0, help="weight of the style loss against the content L1 (default 100)")
    pa.add_argument("--features", default="vgg19", choices=["vgg19", "random"], help="VGG-19 with ImageNet weights (default; see IMPASTO_VGG_WEIGHTS) or a random-weight stand-in (weak, for testing)")
    pa.add_argument("--mask", default=None, help="grey image as large as IMAGE: paint only where it is white; elsewhere the output is IMAGE unchanged")
    pa.add_argument("--canvas", default="black", help="what to paint on: black (default, the reference's), white, #rrggbb, or an image file")
    pa.add_argument("--json", dest="strokes_json", default=None, metavar="S.json", help="write the strokes as JSON (re-render with `impasto render`)")
    pa.add_argument("--npz", default=None, metavar="S.npz", help="write the strokes as numpy .npz")
    pa.add_argument("--svg", default=None, metavar="S.svg", help="write the strokes as SVG vector elements")
    pa.add_argument("--animate", default=None, metavar="A.gif", help="write an animation of the painting (.gif, or .mp4 with imageio-ffmpeg)")
    pa.add_argument("--device", default=None, help="cpu or cuda (default: settings, then auto)")
    pa.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same painting")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="impasto",
        description="Neural painting and texturing: photos, sketches and exemplars in, paintings and textures out.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="render example strokes of every brush with the exact engine and the shipped neural renderers",
        description="Writes a PNG: one row per brush, the exact engine on the left, the shipped neural "
        "renderer on the right, so you can see what the painter draws with.",
    )
    d.add_argument("-o", "--output", required=True, help="PNG to write")
    d.add_argument("--strokes", type=int, default=12, help="strokes per brush (default 12)")
    d.add_argument("--seed", type=int, default=0, help="seed for the example strokes")
    d.add_argument("--json", action="store_true", help="print what was written as JSON")
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser(
        "brushes",
        help="list the brushes, their stroke parameters and their shipped renderers",
        description="Each brush's parameter layout (all in [0, 1]) and the held-out PSNR of its shipped renderer.",
    )
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_cmd_brushes)

    pa = sub.add_parser(
        "paint",
        help="re-make an image as brush strokes (PNG, and optionally strokes JSON/npz, SVG, animation)",
        description="Stylized Neural Painting's progressive stroke search: level m cuts the canvas into m x m "
        "patches; strokes are added where the error is largest and optimised through a differentiable renderer. "
        "The final picture is rendered from the strokes by the exact brush engine at --size.",
    )
    pa.add_argument("image", help="the picture to paint (PNG, JPEG, ...), or example:astronaut / coffee / chelsea / rocket")
    pa.add_argument("-o", "--output", required=True, help="PNG (or JPEG) of the painting")
    _add_paint_arguments(pa)
    pa.add_argument("--report", action="store_true", help="print a JSON summary (outputs, strokes, seconds) on stdout")
    pa.set_defaults(func=_cmd_paint)

    re_ = sub.add_parser(
        "render",
        help="render a saved stroke file (JSON or npz) at any size",
        description="Re-renders strokes written by `impasto paint --json/--npz` with the exact engine, "
        "e.g. a 4096 px print from a 512 px painting. The aspect ratio of the painting is kept.",
    )
    re_.add_argument("strokes", help="stroke file (.json or .npz)")
    re_.add_argument("-o", "--output", required=True, help="PNG to write")
    re_.add_argument("--size", type=int, default=None, help="longer side in px (default: the painting's own size)")
    re_.add_argument("--canvas", default=None, help="override the background: black, white, #rrggbb or an image file")
    re_.add_argument("--json", action="store_true", help="print what was written as JSON")
    re_.set_defaults(func=_cmd_render)

    def synthesis_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--loss", default="histogram", choices=["histogram", "gram", "sliced"],
                       help="histogram: Gram + histogram losses (Risser et al., default); gram: Gram only (Gatys); "
                       "sliced: sliced Wasserstein (Heitz et al.)")
        p.add_argument("--iterations", type=int, default=100, help="optimisation steps per scale (default 100)")
        p.add_argument("--scales", type=int, default=0, help="coarse-to-fine scales (default 0: as many as fit, up to 4)")
        p.add_argument("--lr", type=float, default=0.02, help="Adam learning rate on pixels (default 0.02)")
        p.add_argument("--tv-weight", type=float, default=0.0, help="total-variation weight (smoothness; default 0)")
        p.add_argument("--no-balance", dest="balance", action="store_false", help="turn off automatic loss balancing (gradient normalisation)")
        p.add_argument("--features", default="vgg19", choices=["vgg19", "random"], help="VGG-19 with ImageNet weights (default; see IMPASTO_VGG_WEIGHTS) or the random-weight stand-in (weak, for testing)")
        p.add_argument("--device", default=None, help="cpu or cuda (default: settings, then auto)")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        p.add_argument("--json", action="store_true", help="print what was written as JSON")

    tx = sub.add_parser(
        "texture",
        help="grow a texture of any size from an exemplar (histogram losses; optionally tileable)",
        description="Neural texture synthesis (Risser et al. 2017): VGG-19 feature statistics of the exemplar, "
        "matched coarse to fine with Gram + histogram losses and automatic balancing. See docs/texture.md.",
    )
    tx.add_argument("exemplar", help="the texture sample (PNG, JPEG, ...), or example:NAME")
    tx.add_argument("-o", "--output", required=True, help="PNG to write")
    tx.add_argument("--size", default="512x512", help="WIDTHxHEIGHT of the output (default 512x512)")
    tx.add_argument("--tileable", action="store_true", help="make the texture wrap around seamlessly")
    synthesis_arguments(tx)
    tx.set_defaults(func=_cmd_texture)

    st = sub.add_parser(
        "stylize",
        help="restyle an image after another (histogram losses; optional per-region style from label maps)",
        description="Neural style transfer with histogram losses (Risser et al. 2017): CONTENT keeps its VGG-19 relu4_2 "
        "features, its style statistics move to STYLE's. With --content-labels and --style-labels (flat-colour maps), "
        "each region takes the style of the region of the same colour. See docs/texture.md.",
    )
    st.add_argument("content", help="the picture to restyle")
    st.add_argument("style", help="the style image")
    st.add_argument("-o", "--output", required=True, help="PNG to write")
    st.add_argument("--content-labels", default=None, help="label map of CONTENT (same size, flat colours)")
    st.add_argument("--style-labels", default=None, help="label map of STYLE (same size, the same colours)")
    st.add_argument("--content-weight", type=float, default=1.0, help="weight of the content loss against the style (default 1)")
    synthesis_arguments(st)
    st.set_defaults(func=_cmd_stylize)

    t = sub.add_parser("train", help="train models (renderer)", description="Train impasto's models.")
    tsub = t.add_subparsers(dest="model", metavar="MODEL", required=True)
    r = tsub.add_parser(
        "renderer",
        help="train a neural stroke renderer against the exact brush engine",
        description="Generates strokes on the fly with the brush engine, validates on a fixed held-out set "
        "(PSNR of foreground and alpha), saves a resumable checkpoint.pt and renderer_BRUSH.safetensors in --out. "
        "Re-running with the same --out resumes.",
    )
    r.add_argument("--brush", required=True, help="oil, marker, watercolor or tape")
    r.add_argument("--arch", default="dual", help="dual (default), dual-featuremap, dcgan, pixelshuffle or unet")
    r.add_argument("--steps", type=int, default=20_000, help="optimiser steps (default 20000)")
    r.add_argument("--batch", type=int, default=32, help="strokes per step (default 32)")
    r.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine-decayed (default 1e-3)")
    r.add_argument("--val-every", type=int, default=500, help="validate and checkpoint every N steps")
    r.add_argument("--val-size", type=int, default=512, help="held-out strokes (default 512)")
    r.add_argument("--seed", type=int, default=0, help="data seed")
    r.add_argument("--schedule", default=None, help="coarse-to-fine resolutions as SIZE:FRACTION of the steps, e.g. 32:0.6,64:0.3,128:0.1 (the default); renderers that draw only at 128 ignore it")
    r.add_argument("--out", default=None, help="run folder (default runs/renderer-ARCH-BRUSH)")
    r.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: settings, then auto)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    r.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    r.set_defaults(func=_cmd_train_renderer)
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
    ex.add_argument("--repo", default=None, help="model repository folder (default: settings, then ./model_repository)")
    ex.add_argument("--checkpoint", default=None, help="weights to export instead of the shipped ones (e.g. from `impasto train renderer`)")
    ex.add_argument("--opset", type=int, default=18, choices=[17, 18], help="ONNX opset (default 18)")
    ex.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the fp16 variant")
    ex.add_argument("--allow-unsupported", action="append", default=[], metavar="OP", help="export even though TensorRT's parser does not support OP (repeatable)")
    ex.add_argument("--model-version", type=int, default=1, help="version folder to write (default 1)")
    ex.add_argument("--seed", type=int, default=None, help="seed of the parity inputs (default: fresh)")
    ex.add_argument("--json", action="store_true", help="print parity figures and the TensorRT report as JSON")
    ex.set_defaults(func=_cmd_export)

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
    be.set_defaults(func=_cmd_build_engine)

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
    inf.set_defaults(func=_cmd_infer)

    sv = sub.add_parser(
        "serve",
        help="run the server: gRPC (Studio API, KServe v2, health) and HTTP/JSON, with a supervised torch sidecar",
        description="Serves paint jobs (run in a separate torch sidecar process that is restarted if it dies), rendering, "
        "and the feed-forward models of a model repository through KServe v2 (tritonclient works unchanged). "
        "HTTP/JSON on --http-port serves the same API, KServe v2 REST and Prometheus /metrics. "
        "Loopback only unless --host says otherwise, which then needs --token, TLS or --insecure. See docs/server.md.",
    )
    sv.add_argument("--host", default=None, help="address to listen on (default: settings, then 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None, help="gRPC port (default 8001)")
    sv.add_argument("--http-port", type=int, default=None, help="HTTP/JSON port (default 8000; -1: none)")
    sv.add_argument("--repo", default=None, help="model repository to serve (default: settings; none if it does not exist)")
    sv.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' (prefer IMPASTO_TOKEN: flags show in ps)")
    sv.add_argument("--tls-cert", default=None, help="TLS certificate chain (PEM), with --tls-key")
    sv.add_argument("--tls-key", default=None, help="TLS private key (PEM)")
    sv.add_argument("--insecure", action="store_true", help="allow listening beyond loopback without token or TLS")
    sv.add_argument("--sidecar", default=None, metavar="ADDRESS", help="use a sidecar started elsewhere (host:port or unix:/path) instead of starting one")
    sv.add_argument("--device", default=None, help="device of the sidecar's jobs: auto, cpu, cuda, cuda:N")
    sv.add_argument("--slots", type=int, default=0, help="jobs the sidecar runs at once (default 1)")
    sv.add_argument("--max-jobs", type=int, default=None, help="jobs queued + running at most (default 16)")
    sv.add_argument("--result-ttl", type=float, default=None, help="seconds a finished job and its result are kept (default 3600)")
    sv.add_argument("--backend", default=None, choices=["auto", "tensorrt", "onnxruntime"], help="backend for the repository's models")
    sv.add_argument("--no-batching", dest="batching", action="store_false", help="run every inference request alone")
    sv.add_argument("--max-message-mb", type=int, default=None, help="largest request or reply, MiB (default 256)")
    sv.set_defaults(func=_cmd_serve)

    cl = sub.add_parser("client", help="talk to a running impasto server", description="Client commands against `impasto serve`.")
    csub = cl.add_subparsers(dest="client_command", metavar="COMMAND", required=True)
    cp = csub.add_parser(
        "paint",
        help="paint an image on a server (same options and result as `impasto paint`)",
        description="Sends IMAGE (and --mask/--style/--canvas files) to the server's Paint job, draws a progress bar "
        "from its events and writes the results. The same options and seed give the same picture as a local `impasto paint`.",
    )
    cp.add_argument("image", help="the picture to paint (a file; its bytes are sent as they are)")
    cp.add_argument("-o", "--output", required=True, help="PNG of the painting")
    _add_paint_arguments(cp)
    for c in (cp,):
        c.add_argument("--server", default=None, help="HOST:PORT of the gRPC port (default: settings, then 127.0.0.1:8001)")
        c.add_argument("--token", default=None, help="bearer token (default: IMPASTO_TOKEN)")
        c.add_argument("--tls-ca", default=None, help="CA certificate (PEM) to trust, for a TLS server")
        c.add_argument("--report", action="store_true", help="print a JSON summary on stdout")
    cp.set_defaults(func=_cmd_client_paint)

    ba = sub.add_parser(
        "batch",
        help="run a job spec (paint, texture or stylize over many images) locally, on Ray, or as farm chunks",
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
    ba.add_argument("--count", action="store_true", help="print the number of tasks and exit (for farm templates)")
    ba.add_argument("--json", action="store_true", help="print a JSON summary")
    ba.set_defaults(func=_cmd_batch)

    mo = sub.add_parser(
        "models",
        help="list the models of a repository and the backends that can serve them here",
        description="Reads REPO/*/config.pbtxt with Triton's schema; shows inputs, outputs and batching, "
        "and which backends (tensorrt, onnxruntime) can run on this machine.",
    )
    mo.add_argument("--repo", default=None, help="model repository folder (default: settings)")
    mo.add_argument("--json", action="store_true", help="machine-readable output")
    mo.set_defaults(func=_cmd_models)
    return p


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


def _cmd_export(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from impasto.export.pipeline import export_model

    names = _pick_models(args, _model_names(), "exportable models")
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
                trt = "ok" if result.compatibility.ok else f"allowed: {len(result.compatibility.allowed)}"
                tqdm.write(f"{name}: {result.folder} (max error vs torch: fp32 {result.parity.max_abs:.2g}{fp16}; TensorRT {trt})")
    return {"repo": repo, "models": results} if args.json else {}


def _cmd_build_engine(args: argparse.Namespace) -> dict:
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
    return {"engines": engines} if args.json else {}


def _cmd_infer(args: argparse.Namespace) -> dict:
    import numpy as np

    from impasto.runtime.atomic import atomic_output
    from impasto.runtime.backends import load_backend

    _check_outputs(args.output)
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
    result = {**backend.describe(), "output": args.output, "shapes": {k: list(v.shape) for k, v in outputs.items()}}
    return result if args.json else {"output": args.output}


def _cmd_serve(args: argparse.Namespace) -> dict:
    import asyncio
    from pathlib import Path

    from impasto.runtime.config import load_settings
    from impasto.runtime.server.app import ServerConfig, run

    settings = load_settings({"host": args.host, "port": args.port, "http_port": args.http_port, "token": args.token,
                              "max_jobs": args.max_jobs, "result_ttl": args.result_ttl, "max_message_mb": args.max_message_mb,
                              "device": args.device, "backend": args.backend, "repo": args.repo})
    repo = settings.repo if Path(settings.repo).is_dir() else None
    if args.repo and repo is None:
        raise UsageError(f"--repo {args.repo} does not exist (create it with `impasto export --all --repo {args.repo}`)")
    if not 1 <= settings.max_jobs <= 10_000:
        raise UsageError(f"--max-jobs must be between 1 and 10000, got {settings.max_jobs}")
    config = ServerConfig(
        host=settings.host, port=settings.port, http_port=settings.http_port, repo=repo, token=settings.token or None,
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
    return {}


def _cmd_client_paint(args: argparse.Namespace) -> dict:
    import grpc
    from tqdm import tqdm

    from impasto.runtime.client import JobFailed, StudioClient, paint_request
    from impasto.runtime.config import load_settings
    from impasto.runtime.formats.strokes import save_strokes, strokes_from_json

    settings = load_settings({"server": args.server, "token": args.token})
    _check_suffixes(args)
    if args.animate and not args.animate.lower().endswith(".gif"):
        raise UsageError("--animate with a server writes .gif only (render an .mp4 locally from --json strokes)")
    for flag, path in (("IMAGE", args.image), ("--mask", args.mask), ("--style", args.style)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} '{path}' does not exist")
    canvas_image = None
    options = dict(brush=args.brush, strokes=args.strokes, levels=args.levels, size=args.size, iterations=args.iterations,
                   lr=args.lr, renderer=args.renderer, patch=args.patch, style_mode=args.style_mode,
                   style_weight=args.style_weight, features=args.features, seed=args.seed,
                   ot_weight=_ot_weight(args))
    if Path(args.canvas).is_file():
        canvas_image = args.canvas
    else:
        options["canvas"] = args.canvas
    request = paint_request(args.image, mask=args.mask, style=args.style, canvas_image=canvas_image,
                            svg=bool(args.svg), animation=bool(args.animate), **options)
    bar = tqdm(total=1, desc=f"painting on {settings.server}", unit="step", disable=args.report or None)

    def on_event(event) -> None:
        if event.HasField("progress"):
            p = event.progress
            bar.total = p.total
            bar.set_postfix(level=f"{p.level}/{p.levels}", loss=f"{p.loss:.4f}", refresh=False)
            bar.update(p.step - bar.n)

    try:
        with StudioClient(settings.server, token=settings.token or None, tls_ca=args.tls_ca,
                          max_message_bytes=settings.max_message_mb << 20) as client:
            result = client.paint(request, on_event)
    except grpc.RpcError as e:
        raise UsageError(f"server {settings.server}: {e.code().name}: {e.details()}") from None
    except JobFailed as e:
        raise UsageError(str(e)) from None
    finally:
        bar.close()
    from impasto.runtime.atomic import atomic_output

    written = []
    for path, data in ((args.output, result.image.encoded), (args.svg, result.svg.encode()),
                       (args.animate, result.animation.encoded)):
        if path:
            with atomic_output(path) as f:
                f.write(data)
            written.append(path)
    sf = strokes_from_json(result.strokes_json, "the server's strokes")
    for path in (args.strokes_json, args.npz):
        if path:
            written.append(str(save_strokes(sf, path)))
    summary = {"output": args.output, "written": written, "strokes": result.strokes, "size": [result.width, result.height],
               "seconds": round(result.seconds, 2)}
    if args.report:
        print(json.dumps(summary, indent=1))
        return {}
    return summary


def _synthesis_options(args: argparse.Namespace, settings, tileable: bool = False):
    from impasto.runtime.ops.synthesis import SynthesisOptions
    from impasto.train.loops.renderer import resolve_device

    try:
        device = str(resolve_device(settings.device))
    except ValueError as e:
        raise UsageError(str(e)) from None
    options = SynthesisOptions(loss=args.loss, iterations=args.iterations, scales=args.scales, lr=args.lr,
                               tv_weight=args.tv_weight, balance=args.balance, tileable=tileable, seed=args.seed,
                               device=device, features=args.features, vgg_weights=settings.vgg_weights or None,
                               content_weight=getattr(args, "content_weight", 1.0))
    options.validate()
    return options


def _synthesis_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(total=1, desc=desc, unit="step", disable=None)

    def on_progress(p) -> None:
        bar.total = p.total
        bar.set_postfix(scale=f"{p.scale}/{p.scales}", loss=f"{p.loss:.4g}", refresh=False)
        bar.update(p.step - bar.n)

    return bar, on_progress


def _cmd_texture(args: argparse.Namespace) -> dict:
    import time

    from impasto.runtime.config import load_settings
    from impasto.runtime.images import load_image, save_image
    from impasto.runtime.ops.texture import texture

    settings = load_settings({"device": args.device})
    _check_outputs(args.output)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT, e.g. 1024x1024, got '{args.size}'") from None
    exemplar = load_image(args.exemplar, max_side=settings.max_side, what="exemplar")
    options = _synthesis_options(args, settings, tileable=args.tileable)
    bar, on_progress = _synthesis_bar("texture")
    t0 = time.perf_counter()
    try:
        result = texture(exemplar, (h, w), options, max_side=settings.max_side, progress=on_progress)
    finally:
        bar.close()
    save_image(result, args.output)
    return {"output": args.output, "size": [w, h], "seconds": round(time.perf_counter() - t0, 2)}


def _cmd_stylize(args: argparse.Namespace) -> dict:
    import time

    from impasto.runtime.config import load_settings
    from impasto.runtime.images import load_image, save_image
    from impasto.runtime.ops.stylize import stylize

    settings = load_settings({"device": args.device})
    _check_outputs(args.output)
    if bool(args.content_labels) != bool(args.style_labels):
        raise UsageError("give both --content-labels and --style-labels, or neither")
    content = load_image(args.content, max_side=settings.max_side, what="content image")
    style = load_image(args.style, max_side=settings.max_side, what="style image")
    labels = {}
    if args.content_labels:
        labels = {"content_labels": load_image(args.content_labels, max_side=settings.max_side, what="content label map"),
                  "style_labels": load_image(args.style_labels, max_side=settings.max_side, what="style label map")}
    options = _synthesis_options(args, settings)
    bar, on_progress = _synthesis_bar("stylize")
    t0 = time.perf_counter()
    try:
        result = stylize(content, style, options, progress=on_progress, **labels)
    finally:
        bar.close()
    save_image(result, args.output)
    return {"output": args.output, "size": [int(result.shape[2]), int(result.shape[1])], "seconds": round(time.perf_counter() - t0, 2)}


def _cmd_batch(args: argparse.Namespace) -> dict:
    import os
    import time

    from tqdm import tqdm

    from impasto.runtime.batch.spec import expand, load_spec, select
    from impasto.runtime.config import load_settings
    from impasto.train.loops.renderer import resolve_device

    settings = load_settings({"device": args.device, "token": args.token})
    spec = load_spec(args.spec)
    every = expand(spec)
    if args.count:
        print(len(every))
        return {}
    tasks = select(every, args.items)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    try:
        device = str(resolve_device(settings.device)) if not args.server else "cpu"
    except ValueError as e:
        raise UsageError(str(e)) from None
    options = {"device": device, "threads": threads, "server": args.server, "token": settings.token or None,
               "max_side": settings.max_side, "vgg_weights": settings.vgg_weights or None}
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
    if failures:
        raise SystemExit(1)
    return {}


def _cmd_models(args: argparse.Namespace) -> dict:
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
        return {"repo": repo, "models": models, "backends": backends}
    for m in models:
        shapes = lambda ts: ", ".join(f"{t['name']} {t['dtype']}{t['dims']}" for t in ts)  # noqa: E731
        print(f"{m['name']} (v{m['version']}, batch <= {m['max_batch_size']}): {shapes(m['inputs'])} -> {shapes(m['outputs'])}")
    if not models:
        print(f"no models in {repo} (create them with `impasto export --all --repo {repo}`)")
    for b, why in backends.items():
        print(f"backend {b}: {'available' if not why else 'unavailable: ' + why}")
    return {}


def _cmd_demo(args: argparse.Namespace) -> dict:
    import torch

    from impasto.runtime.images import save_image
    from impasto.train.brushes import BRUSHES, get_brush, render_strokes
    from impasto.train.brushes.examples import example_strokes
    from impasto.train.models.weights_io import load_shipped_renderer
    from impasto.train.models.renderer import SIZE

    if args.strokes < 1:
        raise UsageError(f"--strokes must be at least 1, got {args.strokes}")
    rows, missing = [], []
    for name in BRUSHES:
        params = example_strokes(name, args.strokes, args.seed)
        exact = render_strokes(get_brush(name), params, SIZE)
        try:
            model = load_shipped_renderer(name)
        except FileNotFoundError:
            missing.append(name)
            neural = torch.full_like(exact, 0.5)
        else:
            with torch.no_grad():
                fg, alpha = model(params)
            neural = torch.ones(3, SIZE, SIZE)
            for f, a in zip(fg, alpha):
                neural = f * a + neural * (1 - a)
        rows.append(torch.cat([exact, torch.ones(3, SIZE, 4), neural], dim=2))
    grid = torch.cat([torch.cat([r, torch.ones(3, 4, r.shape[2])], dim=1) for r in rows], dim=1)
    save_image(grid, args.output)
    if missing:
        log.warning("no shipped renderer for %s: those tiles are grey", ", ".join(missing))
    return {"output": args.output, "brushes": list(BRUSHES), "missing_renderers": missing}


def _parse_canvas(value: str, max_side: int):
    """black | white | #rrggbb -> an RGB tuple; anything else is an image file -> a tensor."""
    from impasto.runtime.ops.paint_job import NAMED_COLOURS, PaintRequestError, parse_colour

    if value in NAMED_COLOURS or value.startswith("#"):
        try:
            return parse_colour(value, "--canvas")
        except PaintRequestError as e:
            raise UsageError(f"{e} or an image file") from None
    from impasto.runtime.images import load_image

    return load_image(value, max_side=max_side, what="canvas image")


def _check_outputs(*paths: str | None) -> None:
    """Fail before any work if an output cannot be written (missing folder, unknown type)."""
    from pathlib import Path

    for p in paths:
        if p is not None and not Path(p).resolve().parent.is_dir():
            raise UsageError(f"output folder does not exist: {Path(p).parent}")


def _ot_weight(args: argparse.Namespace) -> float:
    """--ot-weight if given, else the reference's 0.1 with --ot, else off."""
    return args.ot_weight if args.ot_weight is not None else (0.1 if args.ot else 0.0)


def _paint_options(args: argparse.Namespace, device: str, vgg_weights: str | None):
    from impasto.runtime.ops.paint import PaintOptions

    return PaintOptions(
        brush=args.brush, strokes=args.strokes, levels=args.levels, iterations=args.iterations or None, lr=args.lr,
        renderer=args.renderer, patch=args.patch, seed=args.seed, device=device,
        ot_weight=_ot_weight(args),
        style_mode=args.style_mode, style_weight=args.style_weight, features=args.features,
        vgg_weights=vgg_weights,
    )


def _check_suffixes(args: argparse.Namespace) -> None:
    for flag, path, suffixes in (("-o", args.output, (".png", ".jpg", ".jpeg")), ("--json", args.strokes_json, (".json",)),
                                 ("--npz", args.npz, (".npz",)), ("--svg", args.svg, (".svg",)),
                                 ("--animate", args.animate, (".gif", ".mp4"))):
        if path is not None and not path.lower().endswith(suffixes):
            raise UsageError(f"{flag} '{path}' must end with {' or '.join(suffixes)}")
    _check_outputs(args.output, args.strokes_json, args.npz, args.svg, args.animate)


def _cmd_paint(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from impasto.runtime.config import load_settings
    from impasto.runtime.formats.animation import save_animation
    from impasto.runtime.formats.strokes import save_strokes
    from impasto.runtime.formats.svg import save_svg
    from impasto.runtime.images import load_image, load_mask, resize, save_image
    from impasto.runtime.ops.paint_job import PaintJob, run_paint_job
    from impasto.train.loops.renderer import resolve_device

    settings = load_settings({"device": args.device})
    _check_suffixes(args)
    if not 1 <= args.size <= settings.max_side:
        raise UsageError(f"--size must be between 1 and {settings.max_side}, got {args.size}")
    image = load_image(args.image, max_side=settings.max_side)
    h, w = image.shape[1:]
    mask = load_mask(args.mask, (h, w), max_side=settings.max_side) if args.mask else None
    style = load_image(args.style, max_side=settings.max_side, what="style image") if args.style else None
    canvas = _parse_canvas(args.canvas, settings.max_side)
    try:
        device = str(resolve_device(settings.device))
    except ValueError as e:
        raise UsageError(str(e)) from None
    job = PaintJob(image, _paint_options(args, device, settings.vgg_weights or None), args.size, mask, style, canvas)
    job.validate(settings.max_side)  # bad options fail before the progress bar appears
    bar = tqdm(total=1, desc=f"painting ({args.brush})", unit="step", disable=args.report or None)

    def on_progress(p) -> None:
        bar.total = p.total
        bar.set_postfix(level=f"{p.level}/{p.levels}", loss=f"{p.loss:.4f}", refresh=False)
        bar.update(p.step - bar.n)

    outcome = run_paint_job(job, settings.max_side, on_progress)
    bar.close()
    save_image(outcome.canvas, args.output)
    written = [args.output]
    for path in (args.strokes_json, args.npz):
        if path:
            written.append(str(save_strokes(outcome.strokes, path)))
    start = outcome.painting_start
    background = outcome.strokes.background
    out_w, out_h = outcome.width, outcome.height
    if args.svg:
        written.append(str(save_svg(args.svg, args.brush, outcome.strokes.strokes, out_w, out_h, background if start is None else None)))
    if args.animate:
        bg = background if start is None else resize(start, out_h, out_w)
        written.append(str(save_animation(args.animate, args.brush, outcome.strokes.strokes, out_h, out_w, bg)))
    summary = {"output": args.output, "written": written, "strokes": int(outcome.strokes.strokes.shape[0]),
               "size": [out_w, out_h], "seconds": round(outcome.seconds, 2)}
    if args.report:
        print(json.dumps(summary, indent=1))
        return {}
    return summary


def _cmd_render(args: argparse.Namespace) -> dict:
    from impasto.runtime.config import load_settings
    from impasto.runtime.formats.strokes import load_strokes
    from impasto.runtime.images import resize, save_image
    from impasto.train.brushes import get_brush, render_strokes

    settings = load_settings()
    _check_outputs(args.output)
    sf = load_strokes(args.strokes)
    longer = args.size or max(sf.width, sf.height)
    if not 1 <= longer <= settings.max_side:
        raise UsageError(f"--size must be between 1 and {settings.max_side}, got {longer}")
    from impasto.runtime.ops.paint_job import output_size

    h, w = output_size(sf.height, sf.width, longer)
    background = sf.background
    if args.canvas is not None:
        background = _parse_canvas(args.canvas, settings.max_side)
        if not isinstance(background, tuple):
            background = resize(background, h, w)
    canvas = render_strokes(get_brush(sf.brush), sf.strokes, h, w, background)
    save_image(canvas, args.output)
    return {"output": args.output, "size": [w, h], "strokes": int(sf.strokes.shape[0])}


def _cmd_brushes(args: argparse.Namespace) -> dict:
    from impasto.train.brushes import BRUSHES
    from impasto.train.models.weights_io import read_metadata, shipped_renderer_path

    out = {}
    for name, brush in BRUSHES.items():
        path = shipped_renderer_path(name)
        metrics = read_metadata(path).get("metrics", {}) if path.is_file() else None
        out[name] = {
            "fields": list(brush.schema.fields),
            "shape_fields": list(brush.schema.shape_fields),
            "description": brush.schema.description,
            "renderer": metrics,
        }
    if not args.json:
        for name, info in out.items():
            m = info["renderer"]
            psnr = f"renderer {0.5 * (m['psnr_fg'] + m['psnr_alpha']):.1f} dB" if m else "no shipped renderer"
            print(f"{name:11s} {len(info['fields']):2d} params: {' '.join(info['fields'])}  ({psnr})")
            print(f"{'':11s} {info['description']}")
        return {}
    return out


def _parse_schedule(text: str) -> tuple[tuple[int, float], ...]:
    try:
        pairs = tuple((int(size), float(frac)) for size, frac in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise UsageError(f"--schedule '{text}' must look like 32:0.6,64:0.3,128:0.1") from None
    if any(size not in (16, 32, 64, 128) or not 0 < frac <= 1 for size, frac in pairs) or sum(f for _, f in pairs) > 1 + 1e-9:
        raise UsageError(f"--schedule '{text}': sizes must be 16, 32, 64 or 128 and fractions positive, summing to at most 1")
    return pairs


def _cmd_train_renderer(args: argparse.Namespace) -> dict:
    from impasto.runtime.config import load_settings
    from impasto.train.brushes import get_brush
    from impasto.train.loops.renderer import TrainConfig, train_renderer
    from impasto.train.models.renderer import ARCHITECTURES

    get_brush(args.brush)  # raises a clear error for an unknown brush
    if args.arch not in ARCHITECTURES:
        raise UsageError(f"--arch '{args.arch}' is unknown: choose one of {', '.join(ARCHITECTURES)}")
    for flag in ("steps", "batch", "val_every", "val_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    settings = load_settings({"device": args.device, "threads": args.threads})
    schedule = _parse_schedule(args.schedule) if args.schedule else TrainConfig.schedule
    cfg = TrainConfig(
        schedule=schedule,
        brush=args.brush,
        arch=args.arch,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        val_every=args.val_every,
        val_size=args.val_size,
        seed=args.seed,
        device=settings.device,
        threads=settings.threads or None,
        out=args.out or f"runs/renderer-{args.arch}-{args.brush}",
    )
    result = train_renderer(cfg, progress=not args.json)
    final = result.final
    return {
        "weights": str(result.weights),
        "steps": final.step,
        "psnr_fg": round(final.psnr_fg, 3),
        "psnr_alpha": round(final.psnr_alpha, 3),
        "psnr": round(final.psnr, 3),
    }


def _user_errors() -> tuple[type[BaseException], ...]:
    from impasto.runtime.config import ConfigError
    from impasto.runtime.formats.strokes import StrokeFileError
    from impasto.train.models.vgg import VGGWeightsMissing
    from impasto.runtime.images import ImageInputError
    from impasto.train.brushes import StrokeParamError, UnknownBrushError
    from impasto.export.onnx import ExportError
    from impasto.export.registry import InvalidModelNameError, UnknownModelError
    from impasto.export.repository import RepositoryError
    from impasto.export.tensorrt import EngineBuildError, TensorRTUnavailable
    from impasto.runtime.backends import InferenceInputError
    from impasto.runtime.ops.paint_job import PaintRequestError
    from impasto.runtime.ops.synthesis import SynthesisInputError
    from impasto.runtime.batch.spec import SpecError
    from impasto.runtime.api.convert import WireError

    return (UsageError, PaintRequestError, SynthesisInputError, SpecError, WireError, ConfigError, StrokeParamError, UnknownBrushError, FileNotFoundError, ImageInputError,
            StrokeFileError, VGGWeightsMissing, ExportError, InvalidModelNameError, UnknownModelError,
            RepositoryError, TensorRTUnavailable, EngineBuildError, InferenceInputError)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except _user_errors() as e:
        print(f"impasto: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("impasto: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and result:
        print(json.dumps(result, indent=1))
    elif result and "written" in result:
        print(f"wrote {', '.join(result['written'])} ({result['strokes']} strokes, {result['seconds']:.0f} s)")
    elif result and "output" in result:
        print(f"wrote {result['output']}")
    elif result and "weights" in result:
        print(f"wrote {result['weights']} (held-out PSNR {result['psnr']:.2f} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
