"""Who may call the server: a bearer token, TLS, and the rule for listening beyond loopback.

The server listens on loopback unless told otherwise. Listening on any other address needs
a token (clients send ``authorization: Bearer TOKEN``) or TLS certificates, or an explicit
``--insecure``: an open port on a studio network must be a decision, not a default.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
# health checks stay open: load balancers and orchestrators probe without credentials
OPEN_GRPC_METHODS = ("/grpc.health.v1.Health/", "/inference.GRPCInferenceService/ServerLive",
                     "/inference.GRPCInferenceService/ServerReady")
OPEN_HTTP_PATHS = ("/v2/health/live", "/v2/health/ready")


class InsecureBindError(ValueError):
    """Asked to listen beyond loopback with neither a token, TLS nor --insecure."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_bind(host: str, token: str | None, tls: bool, insecure: bool) -> None:
    if is_loopback(host) or token or tls or insecure:
        return
    raise InsecureBindError(
        f"listening on {host} (beyond loopback) needs --token (or IMPASTO_TOKEN), or --tls-cert and --tls-key, "
        "or --insecure to accept unauthenticated connections"
    )


def token_ok(header: str | None, token: str | None) -> bool:
    """Whether an ``authorization`` header carries ``token`` (always true when no token is set)."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())
