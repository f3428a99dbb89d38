"""Settings: CLI flags > environment (``IMPASTO_*``) > a TOML file > defaults.

The TOML file is ``$IMPASTO_CONFIG`` if set, else ``~/.config/impasto/config.toml`` if it
exists. Keys are the field names of :class:`Settings`, e.g. ``device = "cuda"``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from impasto.runtime.errors import InvalidArgument

DEFAULT_MAX_SIDE = 16384


@dataclass(frozen=True)
class Settings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    max_side: int = DEFAULT_MAX_SIDE  # the largest image side accepted anywhere, in pixels
    vgg_weights: str = ""  # a local copy of torchvision's vgg19-dcbb9e9d.pth (else torchvision / its cache)
    repo: str = "model_repository"  # the model repository that export writes and the runtime serves
    backend: str = "auto"  # auto | tensorrt | onnxruntime, for feed-forward models
    # the server (impasto serve) and its clients
    host: str = "127.0.0.1"
    port: int = 8001
    http_port: int = 8000
    token: str = ""  # bearer token the server requires / the client sends
    max_jobs: int = 16
    result_ttl: float = 3600.0
    max_message_mb: int = 256
    server: str = "127.0.0.1:8001"  # where `impasto client` connects


class ConfigError(InvalidArgument):
    """A setting with a wrong name or type; the message names the source and the key."""


def _coerce(name: str, value: Any, kind: type, source: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: setting '{name}' must be {kind.__name__}, got {value!r}") from None


def config_path() -> Path | None:
    explicit = os.environ.get("IMPASTO_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path.home() / ".config" / "impasto" / "config.toml"
    return default if default.is_file() else None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Merge defaults, the TOML file, ``IMPASTO_*`` variables and ``overrides`` (CLI flags; None = unset)."""
    kinds = {f.name: type(getattr(Settings(), f.name)) for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_path()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config file {path}: {e}") from None
        for k, v in data.items():
            if k not in kinds:
                raise ConfigError(f"config file {path}: unknown setting '{k}' (known: {', '.join(kinds)})")
            values[k] = _coerce(k, v, kinds[k], f"config file {path}")
    for k, kind in kinds.items():
        env = os.environ.get(f"IMPASTO_{k.upper()}")
        if env is not None:
            values[k] = _coerce(k, env, kind, f"environment IMPASTO_{k.upper()}")
    for k, v in (overrides or {}).items():
        if v is not None and k in kinds:
            values[k] = _coerce(k, v, kinds[k], "command line")
    return replace(Settings(), **values)
