"""The deploy stage's user-facing error, importable without MLflow or onnxruntime (the CLI catches it)."""

from __future__ import annotations

from spaces.errors import UserError

__all__ = ["RegistryError"]


class RegistryError(UserError):
    """A registry request cannot be served: unknown model, version or alias, unreadable input, wrong shape."""
