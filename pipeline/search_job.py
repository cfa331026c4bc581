"""One supernet search from the pipeline's config: the unit every candidate space is scored by.

Builds the search space (adapted to the data set's channels, classes and
resolution), the data tensors and the search settings from one ``Config``, so
the CLI, Ray trials and benchmarks all run the same search.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, ConfigError
from pipeline.data import DatasetInfo, default_dataset, load_dataset, read_info
from spaces.ops import SpecError
from spaces.search import SearchData, SearchSettings
from spaces.space import SearchSpace, default_space

__all__ = ["dataset_info", "resolve_dataset", "load_space", "load_search_data", "search_settings"]


def resolve_dataset(config: Config) -> Path:
    """The configured data file, or the embedded default imported once into the cache."""
    if config.data.path is not None:
        return config.data.path
    return default_dataset(config.data.cache_dir.expanduser())


def load_space(config: Config, info: DatasetInfo) -> SearchSpace:
    """The configured (or default) space for this data set: its channels, classes, and the
    candidate resolutions that do not exceed the images' size (else the images' size)."""
    space = _configured_space(config.space.file)
    channels, height, width = info.shape
    if height != width:
        raise ConfigError(f"images of {height}x{width} are not square; the search needs square images "
                          "(re-import them resized)")
    fitting = tuple(r for r in space.resolutions if r <= height) or (height,)
    return space.adapted(in_channels=channels, num_classes=info.num_classes, resolutions=fitting)


def _configured_space(path: Path | None) -> SearchSpace:
    """The space file ``space.file`` names (errors say which field pointed there), or the default."""
    if path is None:
        return default_space()
    if not path.is_file():
        raise ConfigError(f"space.file {path} does not exist or is not a file; point it at a search-space "
                          "YAML/JSON (see configs/example.yaml)")
    try:
        return SearchSpace.load(path)
    except SpecError as err:
        raise ConfigError(f"space.file: {err}") from None


def load_search_data(config: Config, path: Path) -> SearchData:
    """Train and val tensors, limited (seeded) as the config asks: the searches' proxy subset where one is set."""
    dataset = load_dataset(path)
    data = config.data
    x_train, y_train = dataset.split("train", limit=_smaller(data.train_limit, data.search_train_limit),
                                     seed=config.search.seed)
    x_val, y_val = dataset.split("val", limit=_smaller(data.val_limit, data.search_val_limit), seed=config.search.seed)
    return SearchData(x_train, y_train, x_val, y_val)


def _smaller(limit: int | None, search_limit: int | None) -> int | None:
    """The tighter of two optional limits (a search never sees more images than the run's limit allows)."""
    limits = [n for n in (limit, search_limit) if n is not None]
    return min(limits) if limits else None


def search_settings(config: Config) -> SearchSettings:
    """The search loop's settings from the config's search and budget sections."""
    fields = config.search.model_dump()
    try:
        return SearchSettings(**fields, budget_metric=config.budget.metric, target=config.budget.target)
    except ValueError as err:  # settings that only clash together, e.g. a tiny target for the fbnet loss
        raise ConfigError(f"budget.target / search.cost_loss: {err}") from None


def dataset_info(config: Config) -> tuple[Path, DatasetInfo]:
    path = resolve_dataset(config)
    return path, read_info(path)
