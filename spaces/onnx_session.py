"""One way to open an onnxruntime session: CPU provider, threads pinned when asked.

The latency table times ops through onnxruntime and the deploy stage times and
serves the exported file; both open sessions here so a table entry and an
exported model's figure differ only in what runs, not in how it is run.
onnxruntime is imported on use: most of ``spaces`` never needs it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["load_onnx_session"]


def load_onnx_session(model: str | os.PathLike[str] | bytes, *, threads: int | None = None) -> Any:
    """An onnxruntime ``InferenceSession`` on ``CPUExecutionProvider`` for a file or serialised model.

    ``threads`` pins intra-op threads (and one inter-op thread) for timings that
    must be comparable; ``None`` keeps onnxruntime's defaults, for serving.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
