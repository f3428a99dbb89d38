"""Who may call the server: bearer tokens naming principals, TLS, and the rule for listening beyond loopback.

The server listens on loopback unless told otherwise. Listening on any other address needs
a token (clients send ``authorization: Bearer TOKEN``) or TLS certificates, or an explicit
``--insecure``: an open port on a studio network must be a decision, not a default.

A token belongs to a *principal*, a name. ``--token`` gives one principal (``default``); a
token file (``--token-file``) gives several, one ``NAME TOKEN`` pair a line. Jobs belong to
the principal that submitted them: listing, watching, fetching, getting and cancelling a job
work only for its owner; anyone else is told it does not exist (not that it is someone
else's). Without any token there is no principal and every caller sees every job.
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
import re
import socket
from pathlib import Path

from impasto.runtime.errors import InvalidArgument

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
# health checks stay open: load balancers and orchestrators probe without credentials
OPEN_GRPC_METHODS = ("/grpc.health.v1.Health/", "/inference.GRPCInferenceService/ServerLive",
                     "/inference.GRPCInferenceService/ServerReady")
OPEN_HTTP_PATHS = ("/v2/health/live", "/v2/health/ready")
DEFAULT_PRINCIPAL = "default"  # the principal of the single --token
MIN_TOKEN_CHARS = 8
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")

# the principal of the gRPC call being handled (set by the server's interceptor, read by the handlers)
PRINCIPAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("impasto_principal", default=None)


class InsecureBindError(ValueError):
    """Asked to listen beyond loopback with neither a token, TLS nor --insecure."""


class TokenFileError(InvalidArgument):
    """A token file that cannot be used; the message names the file and the line."""


class Principals:
    """The tokens a server accepts and whom each names; empty: no authentication at all."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.by_token = {t.encode(): name for name, t in (tokens or {}).items()}

    @property
    def required(self) -> bool:
        """Whether callers must send a token."""
        return bool(self.by_token)

    @classmethod
    def load(cls, token: str | None = None, token_file: str | None = None) -> Principals:
        """``--token`` (principal ``default``) and/or the principals of ``--token-file``."""
        tokens = read_token_file(token_file) if token_file else {}
        if token:
            if DEFAULT_PRINCIPAL in tokens:
                raise TokenFileError(f"token file {token_file}: principal '{DEFAULT_PRINCIPAL}' is taken by --token "
                                     "(IMPASTO_TOKEN); rename it or drop --token")
            if token in tokens.values():
                raise TokenFileError(f"token file {token_file}: --token (IMPASTO_TOKEN) is also a token in the file")
            tokens[DEFAULT_PRINCIPAL] = token
        return cls(tokens)

    def identify(self, header: str | None) -> str | None:
        """The principal whose token an ``authorization`` header carries, or None (no or a wrong token).

        Every known token is compared in constant time, so the time taken says nothing about
        which tokens exist.
        """
        if not header or not header.startswith("Bearer "):
            return None
        sent = header[len("Bearer "):].strip().encode()
        found = None
        for token, name in self.by_token.items():
            if hmac.compare_digest(sent, token):
                found = name
        return found


def read_token_file(path: str) -> dict[str, str]:
    """``NAME TOKEN`` lines (``#`` comments and blank lines ignored) -> {name: token}.

    Raises TokenFileError naming the file and line for a malformed line, a bad name, a
    short token, or a name or token given twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError(f"token file {path}: cannot read it ({e})") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"token file {path}, line {number}"
        if len(fields) != 2:
            raise TokenFileError(f"{where}: expected 'NAME TOKEN', got {len(fields)} field(s)")
        name, token = fields
        if not _NAME.match(name):
            raise TokenFileError(f"{where}: principal name must be 1-64 of A-Z a-z 0-9 _ . @ + -, got {name[:40]!r}")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"{where}: the token of '{name}' has {len(token)} characters; at least {MIN_TOKEN_CHARS}")
        if name in tokens:
            raise TokenFileError(f"{where}: principal '{name}' is listed twice")
        if token in tokens.values():
            raise TokenFileError(f"{where}: the token of '{name}' is also another principal's")
        tokens[name] = token
    if not tokens:
        raise TokenFileError(f"token file {path}: no 'NAME TOKEN' lines")
    return tokens


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
    """Refuse to listen beyond loopback with no token (``token``: any truthy credential), no TLS and no --insecure."""
    if is_loopback(host) or token or tls or insecure:
        return
    raise InsecureBindError(
        f"listening on {host} (beyond loopback) needs --token (or IMPASTO_TOKEN) or --token-file, or --tls-cert and "
        "--tls-key, or --insecure to accept unauthenticated connections"
    )
