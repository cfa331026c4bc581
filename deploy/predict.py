"""Predictions from a registered model: ``autospace predict --model models:/NAME@champion IMAGES...``.

The model's ONNX file and metadata come from the registry
(:func:`deploy.registry.load_registered`), so predicting needs only the
tracking URI, not the run that trained it. Inputs are image files (PNG, JPEG,
anything Pillow reads), converted to the model's channels (``L`` or ``RGB``)
and resized bilinearly to its native input size, or a data file
``path.parquet[:split]`` (default split ``test``) whose images must already have
that shape. Pixels are scaled to [0, 1]; normalisation is inside the model.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.errors import RegistryError
from deploy.registry import existing_store, load_registered

__all__ = ["MAX_IMAGE_PIXELS", "Prediction", "load_inputs", "predict_arrays", "predict_images", "run_predict"]

DEFAULT_SPLIT = "test"
_IMAGE_MODES = {1: "L", 3: "RGB"}
# Explicit, and far below Pillow's own 89M-pixel warning: every model here takes tiny images, and a
# small PNG can declare gigapixels that decoding would have to allocate (a decompression bomb).
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Prediction:
    """The most probable class of one input."""

    source: str
    index: int
    class_name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parquet_input(text: str) -> tuple[Path, str] | None:
    """``data.parquet`` or ``data.parquet:split`` -> (path, split); None for anything else."""
    path, sep, split = text.rpartition(":")
    if sep and path.endswith(".parquet"):
        return Path(path), split or DEFAULT_SPLIT
    return (Path(text), DEFAULT_SPLIT) if text.endswith(".parquet") else None


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    channels, height, width = shape
    mode = _IMAGE_MODES.get(channels)
    if mode is None:
        raise RegistryError(f"the model takes {channels}-channel images; only 1 (L) or 3 (RGB) can be read "
                            "from image files, use a Parquet data file")
    try:
        with Image.open(path) as image:  # reads the header only
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels")
            image = image.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255
    except Image.DecompressionBombError:  # also raised by Pillow itself above 2 x its own limit
        raise RegistryError(f"image {path} declares more than {MAX_IMAGE_PIXELS:,} pixels (the limit for "
                            f"inputs, {int(MAX_IMAGE_PIXELS ** 0.5)}x{int(MAX_IMAGE_PIXELS ** 0.5)}); "
                            "resize it first") from None
    except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise RegistryError(f"cannot read image {path}: {exc}") from exc
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


def load_inputs(inputs: list[Path | str], shape: tuple[int, int, int]) -> tuple[list[str], np.ndarray]:
    """Source names and a float32 N x C x H x W batch in [0, 1] of the model's native ``shape``."""
    from pipeline.data import load_dataset

    sources: list[str] = []
    arrays: list[np.ndarray] = []
    for item in inputs:
        parquet = _parquet_input(str(item))
        if parquet is None:
            sources.append(str(item))
            arrays.append(_read_image(Path(item), shape)[None])
            continue
        path, split = parquet
        dataset = load_dataset(path)
        if tuple(dataset.info.shape) != tuple(shape):
            raise RegistryError(f"{path} holds {'x'.join(map(str, dataset.info.shape))} images but the model "
                                f"takes {'x'.join(map(str, shape))}")
        images, _ = dataset.split(split, normalize=False)
        sources += [f"{path}:{split}[{row}]" for row in range(len(images))]
        arrays.append(images.numpy())
    if not arrays:
        raise RegistryError("no inputs given")
    return sources, np.concatenate(arrays).astype(np.float32, copy=False)


def predict_arrays(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities (N x classes) of a float32 N x C x H x W batch, run in chunks."""
    feed_name = session.get_inputs()[0].name
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = session.run(None, {feed_name: images[start:start + batch_size]})[0].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        chunks.append(exp / exp.sum(axis=1, keepdims=True))
    return np.concatenate(chunks)


def predict_images(model_uri: str, inputs: list[Path | str], tracking_uri: str, *,
                   batch_size: int = 256) -> list[Prediction]:
    """Class, class name and probability of every image in ``inputs`` by the registered model."""
    session, metadata = load_registered(tracking_uri, model_uri)
    channels, height, width = (int(v) for v in metadata["input_shape"])
    sources, images = load_inputs(inputs, (channels, height, width))
    probabilities = predict_arrays(session, images, batch_size)
    classes = metadata["classes"]
    best = probabilities.argmax(axis=1)
    return [Prediction(source, int(k), classes[k], float(probabilities[i, k]))
            for i, (source, k) in enumerate(zip(sources, best))]


# ---- CLI (the parser lives in deploy/cli.py) -------------------------------------------
def _tracking_uri_of(args: argparse.Namespace) -> str:
    from pipeline.config import ConfigError, load_config
    from pipeline.run_dir import RunPaths
    from pipeline.tracking import tracking_uri

    if args.run_dir is not None:
        paths = RunPaths(args.run_dir)
        if not paths.config.exists():
            raise ConfigError(f"{args.run_dir} is not a run directory (no config.yaml)")
        return tracking_uri(load_config(paths.config, [f"out_dir={args.run_dir.resolve()}"]))
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("say where the registry is: --tracking-uri URI, --run-dir DIR or $MLFLOW_TRACKING_URI")
    return uri


def run_predict(args: argparse.Namespace) -> int:
    """``autospace predict``: one tab-separated line (input, class, probability) per image, or JSON."""
    if args.batch_size < 1:
        raise RegistryError(f"--batch-size must be positive, got {args.batch_size}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stdout/stderr to the answers
    predictions = predict_images(args.model, args.inputs, existing_store(_tracking_uri_of(args)),
                                 batch_size=args.batch_size)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        for p in predictions:
            print(f"{p.source}\t{p.class_name}\t{p.probability:.4f}")
    return 0
