"""Settings: CLI flags > environment (``IMPASTO_*``) > a TOML file > defaults.

The TOML file is ``$IMPASTO_CONFIG`` if set, else ``~/.config/impasto/config.toml`` if it
exists. Keys are the field names of :class:`Settings`, e.g. ``device = "cuda"``.
"""

from __future__ import annotations

import math
import os
import time
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from impasto.runtime.errors import InvalidArgument

DEFAULT_MAX_SIDE = 16384


@dataclass(frozen=True)
class Settings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = automatic (local runs: choose_threads, the free CPUs)
    progress_seconds: float = 5.0  # without a terminal, a progress line on stderr this often (0: none)
    max_side: int = DEFAULT_MAX_SIDE  # the largest image side accepted anywhere, in pixels
    vgg_weights: str = ""  # a local copy of torchvision's vgg19-dcbb9e9d.pth (else torchvision / its cache)
    repo: str = "model_repository"  # the model repository that export writes and the runtime serves
    backend: str = "auto"  # auto | tensorrt | onnxruntime, for feed-forward models
    # the server (impasto serve) and its clients
    host: str = "127.0.0.1"
    port: int = 8001
    http_port: int = 8000
    token: str = ""  # bearer token the server requires / the client sends
    token_file: str = ""  # the server's named tokens, one 'NAME TOKEN' a line (jobs are scoped to their principal)
    max_jobs: int = 16
    result_ttl: float = 3600.0
    max_results: int = 1000  # finished jobs kept at most (oldest forgotten first)
    max_result_mb: float = 512.0  # MiB of finished jobs' events and results kept at most
    max_message_mb: int = 256
    server: str = "127.0.0.1:8001"  # where `impasto client` connects


MAX_AUTO_THREADS = 8  # more intra-op threads than this rarely pays off for the ops' small batches


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask (``taskset``, a container's cpuset), further
    limited by a cgroup v2 CPU quota (``docker --cpus``); ``os.cpu_count()`` counts neither."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _cpu_times(cpus: set[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies of ``cpus`` from /proc/stat; None where there is none (not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [float(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            busy += sum(ticks) - ticks[3] - ticks[4]
            total += sum(ticks)
    return (busy, total) if total else None


def busy_cpus(sample: float = 0.25) -> float:
    """How many of this process's CPUs other work keeps busy now: their busy share over ``sample``
    seconds (while this process sleeps), from /proc/stat; elsewhere the 1-minute load average.

    Measured rather than the load average where possible: the average lags by a minute, so a
    run right after another would count the finished one as other work."""
    try:
        mine = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        mine = set(range(os.cpu_count() or 1))
    before = _cpu_times(mine)
    if before is not None:
        time.sleep(sample)
        after = _cpu_times(mine)
        if after is not None and after[1] > before[1]:
            return len(mine) * (after[0] - before[0]) / (after[1] - before[1])
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return 0.0


def choose_threads(setting: int = 0, *, cpus: int | None = None, busy: float | None = None) -> int:
    """Torch intra-op threads for a run: the ``threads`` setting when it is positive, else the
    CPUs available to this process that other work is not already using (:func:`busy_cpus`,
    rounded), capped at :data:`MAX_AUTO_THREADS`, and at least 1.

    Why not torch's default of one thread per core: on cores that other work keeps busy, its
    threads spin waiting for each other; a 40 s paint took 22 minutes, with 8x the CPU time.
    """
    if setting > 0:
        return setting
    cpus = available_cpus() if cpus is None else max(1, cpus)
    busy = busy_cpus() if busy is None else busy
    free = cpus - math.floor(max(0.0, busy) + 0.5)
    return max(1, min(cpus, MAX_AUTO_THREADS, free))


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
