"""Atomic file writes: a reader (or a crash) never sees half a file.

Every checkpoint, state file, table and data set of the project is written the
same way: into a uniquely named temporary file beside the target, then renamed
over it with ``os.replace``, which is atomic within one directory. A failed
write removes the temporary file and leaves an existing target as it was. This
module is the lowest layer's (no torch, no Ray), so every package can use it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically", "write_text_atomically"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(temp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    ``write`` receives a path that does not exist yet (so writers that want a path,
    such as ``torch.save`` or ``pyarrow.parquet.write_table``, fit); the parent
    directory is created first. The temporary name is unique per process and call,
    so concurrent writers of one target never write into each other's file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))
