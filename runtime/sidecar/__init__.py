"""The torch sidecar: a separate process that runs impasto's optimisation jobs (paint now).

The server starts and supervises it (or it runs alone on another host: ``python -m
impasto.runtime.sidecar --listen HOST:PORT``); they speak the internal gRPC API in
``proto/impasto/sidecar/v1/sidecar.proto`` over a Unix socket or TCP. A crash, an
out-of-memory kill or a stuck GPU stays in this process; the server survives it.
"""
