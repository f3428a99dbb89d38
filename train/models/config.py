"""What every model config shares: it is stored as JSON beside its weights and read back exactly.

Model families declare their config as a frozen dataclass that also derives from
:class:`StoredConfig`; the weights files (``weights_io``) write ``to_dict()`` into their
metadata and rebuild the model from ``from_dict()``, which refuses keys it does not know
(a file from a newer or another model) instead of ignoring them.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

__all__ = ["StoredConfig"]

C = TypeVar("C", bound="StoredConfig")


class StoredConfig:
    """Mixin for dataclass model configs: ``to_dict`` and a strict ``from_dict``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """The config from its stored form; unknown keys are an error that names them."""
        extra = sorted(set(data) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
        if extra:
            raise ValueError(f"unknown {cls.__name__} keys: {', '.join(extra)}")
        return cls(**data)
