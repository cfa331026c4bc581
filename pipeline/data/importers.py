"""Importers: read common image-classification formats into one Parquet data file.

Each ``read_<format>`` function turns a source path into a :class:`RawDataset`
(uint8 NHWC images, labels, train/test split names, class names);
:func:`import_dataset` dispatches on the format name and hands the result to
:func:`write_dataset`, so validation, the val split and the file layout are
shared by every format.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.errors import DataError
from pipeline.data.info import DatasetInfo
from pipeline.data.store import write_dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FORMATS",
    "RawDataset",
    "import_dataset",
    "read_cifar",
    "read_idx",
    "read_imagefolder",
    "read_npz",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True)
class RawDataset:
    """What an importer found: uint8 [N, H, W, C] images and, per row, a label and a split name."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def from_parts(cls, parts: dict[str, tuple[np.ndarray, np.ndarray]], classes: Sequence[str]) -> RawDataset:
        """Concatenate per-split (images, labels) pairs, e.g. ``{"train": ..., "test": ...}``."""
        return cls(
            images=np.concatenate([images for images, _ in parts.values()]),
            labels=np.concatenate([labels for _, labels in parts.values()]).astype(np.int64),
            splits=np.concatenate([np.full(len(labels), name, dtype=object) for name, (_, labels) in parts.items()]),
            classes=tuple(classes),
        )


def class_name(value: object) -> str:
    """A class name from a stored value; pickles and npz files often hold bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def default_class_names(labels: np.ndarray) -> tuple[str, ...]:
    """Names "0", "1", ... up to the largest label, for formats that store no names."""
    return tuple(str(label) for label in range(int(labels.max()) + 1)) if len(labels) else ()


# --- idx (MNIST, Fashion-MNIST) -------------------------------------------------------------

IDX_UINT8 = 0x08
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(src: Path) -> RawDataset:
    """MNIST-style IDX files (optionally gzipped) in directory ``src``; the test pair is optional.

    Class names come from ``src/classes.txt`` (one per line) if present, the
    Fashion-MNIST names if the path mentions "fashion", else "0".."9".
    """
    src = _existing_dir(src, "idx")
    parts = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        images_path, labels_path = _find_idx_file(src, images_name), _find_idx_file(src, labels_name)
        if images_path is None and labels_path is None and split == "test":
            continue
        if images_path is None or labels_path is None:
            missing = images_name if images_path is None else labels_name
            raise DataError(
                f"{src} has no {missing} (or {missing}.gz); an IDX directory needs "
                f"{', '.join(IDX_FILES['train'])} and optionally {', '.join(IDX_FILES['test'])}"
            )
        images, labels = _parse_idx(images_path, ndim=3), _parse_idx(labels_path, ndim=1)
        if len(images) != len(labels):
            raise DataError(
                f"{images_path.name} holds {len(images)} images but {labels_path.name} holds {len(labels)} "
                "labels; they must come from the same release — re-download the pair"
            )
        parts[split] = (images[..., np.newaxis], labels)
    labels = np.concatenate([labels for _, labels in parts.values()])
    return RawDataset.from_parts(parts, _idx_class_names(src, labels))


def _find_idx_file(src: Path, name: str) -> Path | None:
    return next((path for path in (src / name, src / f"{name}.gz") if path.is_file()), None)


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one IDX file: 2 zero bytes, dtype code, ndim, big-endian uint32 dims, data."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; the download is probably incomplete, re-download it") from exc
    expected_magic = (IDX_UINT8 << 8) | ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        found = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise DataError(
            f"{path} does not start with the IDX magic number 0x{expected_magic:08x} "
            f"(uint8, {ndim} dimension{'s' if ndim > 1 else ''}), found {found}; "
            "is it the right file, and is it gzipped without a .gz suffix?"
        )
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DataError(f"{path} is truncated: {len(data)} bytes is shorter than its {header_bytes}-byte header")
    dims = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected, actual = int(np.prod(dims)), len(data) - header_bytes
    if expected != actual:
        raise DataError(
            f"{path} is truncated or padded: its header promises dims {list(dims)}, i.e. {expected} bytes "
            f"of data, but it holds {actual} bytes; re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _idx_class_names(src: Path, labels: np.ndarray) -> tuple[str, ...]:
    names_file = src / "classes.txt"
    if names_file.is_file():
        return tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    if "fashion" in str(src.absolute()).lower():
        return FASHION_MNIST_CLASSES
    return default_class_names(labels)


# --- cifar (CIFAR-10 / CIFAR-100, python version) ----------------------------------------------


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    A pickle can name any importable callable (``os.system``, ...) and have it
    called while loading, so CIFAR batches from the internet are loaded with
    this allow-list instead of ``pickle.load``.
    """

    _reconstruct = np.ndarray(0).__reduce__()[0]  # resolved for the installed numpy version
    _frombuffer = np.arange(1).__reduce_ex__(5)[0]
    ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles written by Python 3 store bytes
    }

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path} refers to {module}.{name}, which a CIFAR batch never contains; refusing to "
                "unpickle it because that could run arbitrary code — use the official "
                "'CIFAR python version' download"
            ) from None


def _load_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with path.open("rb") as file:
            batch = _ArrayOnlyUnpickler(file, path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, LookupError, AttributeError) as exc:
        # a corrupt pickle can fail in any of these ways
        raise DataError(f"cannot unpickle {path}: {exc}; re-download the CIFAR 'python version'") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, but a CIFAR batch is a dict; re-download it")
    return batch


def _batch_field(batch: dict[bytes, Any], key: str, path: Path) -> Any:
    if key.encode() not in batch:
        found = ", ".join(k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in batch)
        raise DataError(f"{path} has no {key!r} entry (found: {found}); is it a CIFAR python-version file?")
    return batch[key.encode()]


def _read_cifar_batches(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (HWC) and labels of CIFAR batch files; rows are 3072 bytes, CHW 3x32x32."""
    images, labels = [], []
    for path in paths:
        batch = _load_pickle(path)
        data = _batch_field(batch, "data", path)
        batch_labels = np.asarray(_batch_field(batch, label_key, path))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: 'data' should be a uint8 array [N, 3072], found {found}; re-download it")
        if len(batch_labels) != len(data):
            raise DataError(f"{path} holds {len(data)} images but {len(batch_labels)} labels; re-download it")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def read_cifar(src: Path) -> RawDataset:
    """CIFAR-10 (``data_batch_*``, ``test_batch``, ``batches.meta``) or CIFAR-100 (``train``, ``test``, ``meta``)."""
    src = _existing_dir(src, "cifar")
    if (src / "batches.meta").is_file():
        train = sorted(src.glob("data_batch_*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
        test, meta, label_key, names_key = src / "test_batch", src / "batches.meta", "labels", "label_names"
    elif (src / "meta").is_file():
        train = [src / "train"] if (src / "train").is_file() else []
        test, meta, label_key, names_key = src / "test", src / "meta", "fine_labels", "fine_label_names"
    else:
        raise DataError(
            f"{src} is not a CIFAR directory: expected batches.meta + data_batch_1..5 + test_batch (CIFAR-10) "
            "or meta + train + test (CIFAR-100); point SRC at the extracted cifar-10-batches-py or "
            "cifar-100-python directory"
        )
    if not train:
        raise DataError(f"{src} has {meta.name} but no training batches (data_batch_* or train)")
    names = _batch_field(_load_pickle(meta), names_key, meta)
    classes = [class_name(name) for name in names]
    parts = {"train": _read_cifar_batches(train, label_key)}
    if test.is_file():
        parts["test"] = _read_cifar_batches([test], label_key)
    return RawDataset.from_parts(parts, classes)


# --- imagefolder --------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS_OF_MODE = {"L": 1, "RGB": 3}
STORED_MODE = {"1": "L", "L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "P": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def read_imagefolder(src: Path) -> RawDataset:
    """``src/<class>/*.png|jpg|jpeg``, or ``src/train/<class>/...`` plus ``src/test/<class>/...``."""
    src = _existing_dir(src, "imagefolder")
    split_dirs = {"train": src / "train", "test": src / "test"}
    if not all(path.is_dir() for path in split_dirs.values()):
        split_dirs = {"train": src}
    classes = _class_dirs(split_dirs["train"])
    reference: dict[str, Any] = {}
    parts = {}
    for split, root in split_dirs.items():
        found = _class_dirs(root)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{root} has class folders {unknown} missing from {split_dirs['train']}; train needs them all"
            )
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in _image_files(root / name) if name in found else []:
                images.append(_decode_image(path, reference))
                labels.append(label)
        parts[split] = (np.stack(images), np.asarray(labels))
    return RawDataset.from_parts(parts, classes)


def _class_dirs(root: Path) -> list[str]:
    names = sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not names:
        raise DataError(
            f"{root} has no class folders; an imagefolder source looks like SRC/<class>/<image>.png "
            "(or SRC/train/<class>/... and SRC/test/<class>/...)"
        )
    return names


def _image_files(folder: Path) -> list[Path]:
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise DataError(
            f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder"
        )
    return files


def _decode_image(path: Path, reference: dict[str, Any]) -> np.ndarray:
    """Decode one image as uint8 HWC; the first image fixes the size and mode all others must match."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = STORED_MODE.get(image.mode)
            if mode is None:
                raise DataError(f"{path} has image mode {image.mode!r}; convert it to 8-bit grayscale (L) or RGB")
            pixels = np.asarray(image.convert(mode) if image.mode != mode else image)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode {path} ({exc}); replace or delete the file") from exc
    pixels = pixels.reshape(*pixels.shape[:2], CHANNELS_OF_MODE[mode])
    described = f"{pixels.shape[1]}x{pixels.shape[0]} {mode}"
    if not reference:
        reference.update(shape=pixels.shape, described=described, path=path)
    elif pixels.shape != reference["shape"]:
        raise DataError(
            f"{path} is {described} but {reference['path']} is {reference['described']} (width x height mode); "
            "all images must share one size and mode — resize/convert them first"
        )
    return pixels


# --- npz ----------------------------------------------------------------------------------------


def read_npz(src: Path) -> RawDataset:
    """A ``.npz`` holding ``x_train``, ``y_train`` (+ ``x_test``, ``y_test``) or ``images``, ``labels``.

    An optional ``classes`` array names the labels; loaded without pickle support.
    """
    src = Path(src)
    if not src.is_file():
        raise DataError(f"npz source {src} does not exist or is not a file")
    try:
        with np.load(src, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {src} as a .npz archive ({exc}); save it with numpy.savez") from exc
    pairs = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
    if "x_train" not in arrays and "images" in arrays:
        pairs = {"train": ("images", "labels")}
    parts = {}
    for split, (x_key, y_key) in pairs.items():
        if x_key not in arrays and y_key not in arrays and split == "test":
            continue
        if x_key not in arrays or y_key not in arrays:
            raise DataError(
                f"{src} has keys {sorted(arrays)}; expected x_train + y_train (optionally x_test + y_test) "
                f"or images + labels — {x_key!r} and {y_key!r} must come together"
            )
        parts[split] = (_npz_images(arrays[x_key], f"{src}[{x_key}]"), _npz_labels(arrays[y_key], f"{src}[{y_key}]"))
    shapes = {images.shape[1:] for images, _ in parts.values()}
    if len(shapes) > 1:
        raise DataError(f"{src}: train and test images differ in shape {sorted(shapes)}; they must share H, W, C")
    labels = np.concatenate([labels for _, labels in parts.values()])
    classes = [class_name(name) for name in arrays["classes"]] if "classes" in arrays else default_class_names(labels)
    return RawDataset.from_parts(parts, classes)


def _npz_images(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 NHWC from NHW / NHWC arrays, uint8 or float in [0, 1]."""
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = " (it looks like NCHW: transpose it to NHWC)" if images.ndim == 4 and images.shape[1] in (1, 3) else ""
        raise DataError(f"{where} has shape {images.shape}; expected [N, H, W] or [N, H, W, C] with C = 1 or 3{hint}")
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating) and images.size and images.min() >= 0.0 and images.max() <= 1.0:
        return np.rint(images * 255.0).astype(np.uint8)
    raise DataError(f"{where} is {images.dtype}; images must be uint8 (0..255) or float in [0, 1] — "
                    "convert them first")


def _npz_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where} is {labels.dtype} of shape {labels.shape}; labels must be 1-D integer class indices")
    return labels


# --- dispatch -----------------------------------------------------------------------------------

FORMATS: dict[str, Callable[[Path], RawDataset]] = {
    "idx": read_idx,
    "cifar": read_cifar,
    "imagefolder": read_imagefolder,
    "npz": read_npz,
}


def import_dataset(
    fmt: str,
    src: Path,
    out: Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> DatasetInfo:
    """Import ``src`` in format ``fmt`` into the Parquet data file ``out``.

    ``val`` is carved from ``train`` (``val_fraction`` of each class, chosen by
    ``seed``); ``classes`` overrides the class names the format provides.
    """
    reader = FORMATS.get(fmt)
    if reader is None:
        raise DataError(f"unknown data format {fmt!r}; supported formats: {', '.join(FORMATS)}")
    src = Path(src)
    if not src.exists():
        raise DataError(f"source {src} does not exist; check the path")
    raw = reader(src)
    if classes is not None:
        raw = replace(raw, classes=tuple(classes))
    return write_dataset(
        out,
        raw.images,
        raw.labels,
        raw.splits,
        raw.classes,
        source=f"{fmt}:{src.absolute()}",
        val_fraction=val_fraction,
        seed=seed,
    )


def _existing_dir(src: Path, fmt: str) -> Path:
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{fmt} source {src} is not a directory; point SRC at the folder holding the files")
    return src
