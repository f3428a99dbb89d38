"""``impasto client OP``: run any op on a running ``impasto serve``, with the flags of ``impasto OP``.

The flags come from the same builder as the local command (:func:`.ops.add_op_arguments`),
and the request gets the same checks (:func:`impasto.runtime.ops.request.prepare`) here
before anything is sent, so a bad value is one line and exit code 2 without a round trip,
worded as the local command words it. The request goes to the server's generic ``Run``
RPC; progress events drive the bar, and the outputs of the result are written like a local
run's. The same options and seed give the same picture as ``impasto OP``.
"""

from __future__ import annotations

import argparse
from typing import Any

from impasto.runtime.cli.ops import (
    ProgressBar,
    add_op_arguments,
    print_summary,
    read_request,
    write_all,
)
from impasto.runtime.cli.outputs import check_targets
from impasto.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from impasto.runtime.ops.registry import OpSpec, RunContext, get_op, list_ops

# a server's status name -> the local kind (anything else, INTERNAL included, reads as "the server could not")
_KINDS = {"INVALID_ARGUMENT": InvalidArgument, "NOT_FOUND": NotFound, "RESOURCE_EXHAUSTED": ResourceExhausted,
          "FAILED_PRECONDITION": FailedPrecondition}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto client`` and, under it, ``impasto client OP`` for every registered op."""
    cl = sub.add_parser("client", help="run an op on a running impasto server (the flags of `impasto OP`)",
                        description="Client commands against `impasto serve`: each op with the same flags as the "
                        "local command, sent to the server's job API.")
    csub = cl.add_subparsers(dest="client_command", metavar="OP", required=True)
    for name in list_ops():
        spec = get_op(name)
        p = csub.add_parser(name, help=f"{spec.help}, on a server", allow_abbrev=False,
                            description=f"{spec.description} Runs on the server as a job: the image files are sent "
                            "as they are, the progress bar follows the job's events, and the outputs are written "
                            f"here. The same options and seed give the same result as `impasto {name}`.")
        add_op_arguments(p, spec)
        server = p.add_argument_group("server")
        server.add_argument("--server", default=None, metavar="HOST:PORT",
                            help="the server's gRPC port (default: settings, then 127.0.0.1:8001)")
        server.add_argument("--token", default=None, help="bearer token (default: IMPASTO_TOKEN)")
        server.add_argument("--tls-ca", default=None, metavar="PEM", help="CA certificate to trust, for a TLS server")
        p.add_argument("--report", action="store_true", help="print a JSON summary instead of the progress bar")
        p.set_defaults(func=run_remote, op=name)


def _wire_images(request_images: dict) -> dict[str, Any]:
    """Images as the client sends them: a file's path (its bytes go as they are), a sample as PNG bytes."""
    from impasto.runtime.images import encode_png, load_example

    out: dict[str, Any] = {}
    for name, source in request_images.items():
        if source.path.startswith("example:"):
            out[name] = encode_png(load_example(source.path.split(":", 1)[1]))
        else:
            out[name] = source.path
    return out


def _result_values(spec: OpSpec, result: Any) -> dict[str, Any]:
    """An OpResult's outputs by key (a series output's items as name, name.2, ...): PNG bytes (images),
    strings (texts), bytes (files)."""
    values: dict[str, Any] = {}
    for output in spec.outputs:
        field = {"image": result.images, "text": result.texts, "file": result.files}[output.kind]
        for _, key, value in output.items_in(field):
            values[key] = value if output.kind == "text" else value.encoded
    return values


def run_remote(args: argparse.Namespace) -> int:
    """``impasto client OP``: check locally, send, follow the job, write its outputs."""
    import grpc
    from impasto.runtime.client import JobFailed, StudioClient
    from impasto.runtime.config import load_settings
    from impasto.runtime.ops.request import prepare

    spec = get_op(args.op)
    settings = load_settings({"server": args.server, "token": args.token})
    cli = read_request(spec, args)
    check_targets(cli.targets)
    # the server's own checks, here: a bad value costs no round trip and reads as the local command's
    options, _ = prepare(spec, cli.request, RunContext(device="cpu", max_side=settings.max_side), cli.labels)
    typed = {name: getattr(options, name) for name in cli.request.options}
    bar = ProgressBar(f"{spec.name} on {settings.server}", off=args.report, every=settings.progress_seconds)

    def on_event(event: Any) -> None:
        if event.HasField("progress"):
            p = event.progress
            bar.update(p.level, p.levels, p.step, p.total, p.loss)

    try:
        with StudioClient(settings.server, token=settings.token or None, tls_ca=args.tls_ca,
                          max_message_bytes=settings.max_message_mb << 20) as client:
            result = client.run(spec.name, _wire_images(cli.request.images), typed, sorted(cli.request.outputs),
                                on_event)
    except grpc.RpcError as e:
        code = e.code().name if e.code() else "UNKNOWN"
        raise _KINDS.get(code, Unavailable)(f"server {settings.server}: {code}: {e.details()}") from None
    except JobFailed as e:
        raise _KINDS.get(e.code, Unavailable)(str(e)) from None
    finally:
        bar.close()
    written = write_all(cli.targets, _result_values(spec, result))
    print_summary(cli.targets, written, dict(result.numbers), args.report)
    return 0
