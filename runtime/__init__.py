"""impasto.runtime: the ops, backends, server, sidecar, batch runner and the `impasto` CLI."""
