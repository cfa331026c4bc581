"""The pipeline's one configuration object, read from one YAML file.

Every section is a pydantic model with ``extra="forbid"``, so a typo is an error
rather than a silently ignored key. :func:`load_config` turns pydantic's
errors into one :class:`ConfigError` whose lines name the field, the bad value
and what is allowed. ``--set section.field=value`` overrides come in through
:func:`apply_overrides` before validation, so they are checked the same way.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from evolve.cells import VOCABULARY_SIZE
from evolve.loop import EvolutionSettings
from spaces.search import SearchSettings
from spaces.errors import UserError, cut

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "SpaceConfig",
    "BudgetConfig",
    "SearchConfig",
    "EvolutionConfig",
    "RayConfig",
    "MlflowConfig",
    "RetrainConfig",
    "ExportConfig",
    "load_config",
    "apply_overrides",
]


class ConfigError(UserError):
    """The configuration is invalid; the message lists every bad field."""


class _Section(BaseModel):
    # inf/nan would pass every bound (gt=0 holds for inf) and break the arithmetic far from the config.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Where the images come from and how much of them a quick run uses."""

    path: Path | None = Field(None, description="Parquet data set (autospace data import); null = embedded default")
    cache_dir: Path = Field(Path("~/.cache/autospace"), description="where the embedded default is imported once")
    train_limit: int | None = Field(None, ge=1, description="use at most this many training images (seeded)")
    val_limit: int | None = Field(None, ge=1, description="use at most this many validation images (seeded)")
    test_limit: int | None = Field(None, ge=1, description="use at most this many test images (seeded)")
    search_train_limit: int | None = Field(None, ge=1, description="the searches' proxy subset of the training "
                                           "images (seeded); null = train_limit")
    search_val_limit: int | None = Field(None, ge=1, description="the searches' subset of the validation images; "
                                         "null = val_limit")


class SpaceConfig(_Section):
    """The search space and the reference architecture kept in every candidate space."""

    file: Path | None = Field(None, description="search-space YAML/JSON; null = the packaged default space")
    reference: str | None = Field(None, description="reference arch string; null = MobileNetV2-style for small inputs")


class BudgetConfig(_Section):
    """The compute constraint: which cost, its target, and how hard it binds."""

    metric: Literal["madds", "params", "latency"] = "madds"
    target: float = Field(5e6, gt=0, description="target cost (MAdds, params, or milliseconds)")
    latency_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="runtime whose per-op latency table (batch 1, one thread) prices latency")
    reward_exponent: float = Field(-0.07, le=0, description="MnasNet w in acc*(cost/target)^w above the target")


def _section_of(settings: type, doc: str, base: type[_Section] = _Section, *, omit: tuple[str, ...] = (),
                **rules: dict[str, Any]) -> Any:
    """A config section with the fields, types and defaults of the algorithm's settings dataclass.

    The dataclass declares each setting once; here ``rules`` only add what the config
    validates and documents (bounds, a description), and a ``default`` only where the
    pipeline's differs from the algorithm's. ``omit``: fields another section fills
    (the budget's metric and target).
    """
    declared = {f.name: f for f in dataclass_fields(settings)}
    if set(rules) - set(declared):
        raise TypeError(f"{settings.__name__} has no field {sorted(set(rules) - set(declared))}")
    hints = get_type_hints(settings)
    definitions: dict[str, Any] = {name: (hints[name], Field(**{"default": f.default, **rules.get(name, {})}))
                                   for name, f in declared.items() if name not in omit}
    return create_model(settings.__name__.replace("Settings", "Config"), __base__=base, __doc__=doc,
                        __module__=__name__, **definitions)


class _SearchRules(_Section):
    @model_validator(mode="after")
    def _warmup_shorter_than_search(self) -> Any:
        if self.warmup_epochs >= self.epochs:  # type: ignore[attr-defined]
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be smaller than "  # type: ignore[attr-defined]
                             f"epochs={self.epochs}")  # type: ignore[attr-defined]
        return self

    @model_validator(mode="after")
    def _accepted_by_the_search(self) -> Any:
        """The search's own checks of its settings (those with the budget: ``search_job.search_settings``)."""
        SearchSettings(**self.model_dump())
        return self


SearchConfig = _section_of(
    SearchSettings, "The differentiable supernet search run on each candidate space (spaces.search.SearchSettings).",
    _SearchRules, omit=("budget_metric", "target"),
    epochs=dict(ge=1), warmup_epochs=dict(ge=0), batch_size=dict(ge=1),
    lr=dict(gt=0, description="SGD learning rate of network weights"), weight_decay=dict(ge=0),
    arch_lr=dict(gt=0, description="Adam learning rate of architecture parameters"),
    cost_beta=dict(ge=0, description="beta of CE*(log cost/log target)^beta"),
    cost_lambda=dict(ge=0, description="lambda of CE + lambda*relu(cost/target - 1)"),
    tau_start=dict(gt=0, description="Gumbel-softmax temperature at the start"),
    tau_end=dict(gt=0, description="temperature at the end (exponential decay)"),
    finetune_epochs=dict(ge=0, description="epochs fine-tuning the derived child before validation"),
    sampling=dict(description="single_path: each step runs one sampled child; relaxed: the whole mixture"),
    arch_gradient=dict(description="straight_through: GDAS gates on the sampled path; reinforce: the path's loss "
                       "against a moving baseline times grad log P (reaches every choice, resolution included); "
                       "hybrid: the gates, and the score function for the resolution alone"),
    derive_ranked=dict(ge=0, description="in-budget candidates ranked by derive_proxy (0: argmax)"),
    derive_samples=dict(ge=0, description="architectures drawn from the learned distribution"),
    derive_window=dict(ge=0, lt=1, description="prefer candidates within this share below target"),
    derive_proxy=dict(description="what ranks the candidates: inherited accuracy, or val accuracy after "
                      "derive_proxy_steps of training from the inherited weights (few_shot) or from scratch"),
    derive_proxy_steps=dict(ge=1, description="training steps of the few_shot and scratch proxies"),
    derive_keep_resolution=dict(description="rank only candidates at the most probable architecture's input "
                                "resolution (the trained proxies cannot see the resolution)"),
    weight_resolution=dict(description="learned: weight steps train at resolutions drawn from the logits; "
                           "uniform: drawn uniformly, so the resolution's score function compares resolutions "
                           "trained alike (no rich-get-richer collapse)"),
    # the search alone needs no evidence (0); the evolution's cell fitness does, so the pipeline asks for it
    evidence_samples=dict(default=32, ge=1, description="uniform members within budget whose inherited accuracy "
                          "gives each cell's accuracy effect (the evolution's cell fitness)"),
)


class _EvolutionRules(_Section):
    @model_validator(mode="after")
    def _k_fits_population(self) -> Any:
        if self.cells_per_layer > self.population_per_layer:  # type: ignore[attr-defined]
            raise ValueError(f"cells_per_layer={self.cells_per_layer} exceeds "  # type: ignore[attr-defined]
                             f"population_per_layer={self.population_per_layer}")  # type: ignore[attr-defined]
        return self


EvolutionConfig = _section_of(
    EvolutionSettings, "The AutoSpace outer loop over candidate search spaces (evolve.loop.EvolutionSettings).",
    _EvolutionRules, omit=("metric", "target", "reward_exponent", "search_learns_resolution"),
    generations=dict(ge=1),
    spaces_per_generation=dict(ge=1, description="candidate spaces sampled per generation (Tune trials)"),
    population_per_layer=dict(ge=2, le=VOCABULARY_SIZE, description="cells kept in each layer's population; at "
                              f"most the {VOCABULARY_SIZE} distinct cells of the vocabulary"),
    cells_per_layer=dict(ge=1, description="K: cells each candidate space offers per layer"),
    tournament_size=dict(ge=1), elite=dict(ge=0, description="best spaces carried over unchanged"),
    replace_fraction=dict(ge=0, le=1, description="worst cells replaced by mutants per generation"),
    fitness_momentum=dict(ge=0, le=1, description="moving-average weight of a cell's old fitness"),
    wall_time_minutes=dict(gt=0, description="budget: no generation starts that would end past it at the mean "
                           "pace so far"),
)


class RayConfig(_Section):
    """Where the work runs: local by default, ``address`` for an existing cluster."""

    address: str | None = Field(None, description="Ray cluster address; null = start a local Ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray; null = all")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train data-parallel workers per search")
    cpus_per_worker: float = Field(1.0, gt=0)
    max_concurrent_trials: int | None = Field(None, ge=1, description="null = as many as the resources allow")
    max_failures: int = Field(1, ge=0, description="retries of a failed trial before it is scored as failed")


class MlflowConfig(_Section):
    """Tracking: a SQLite store and artifact folder in the run directory unless told."""

    tracking_uri: str | None = Field(None, description="null = sqlite:///<run dir>/mlflow.db")
    experiment: str = "autospace"
    registered_model: str = "autospace-model"
    promote_min_gain: float = Field(0.0, ge=0, description="test-accuracy gain needed to replace the champion")
    promote_budget_slack: float = Field(1.0, ge=1, description="a champion's cost may be at most target x this")


class RetrainConfig(_Section):
    """Training the final architectures from scratch, hyper-parameters tuned by Optuna."""

    enabled: bool = Field(True, description="run the deploy stage (retrain, export, register) after evolving")
    top_k: int = Field(2, ge=1, description="Pareto-front architectures to retrain")
    epochs: int = Field(5, ge=1, description="epochs of the final training (train+val)")
    tuning_trials: int = Field(4, ge=1, description="Optuna trials per architecture")
    tuning_epochs: int = Field(3, ge=1, description="epochs of one tuning trial (ASHA's max_t)")
    batch_size: int = Field(128, ge=1)
    workers: int = Field(1, ge=1, description="Ray Train data-parallel workers of the final training")
    cpus_per_worker: float | None = Field(None, gt=0, description="CPUs (torch threads) of each final-training "
                                          "worker; null = ray.cpus_per_worker")
    lr_range: tuple[float, float] = (0.01, 0.2)
    weight_decay_range: tuple[float, float] = (1e-5, 1e-3)
    label_smoothing_range: tuple[float, float] = (0.0, 0.2)
    augmentation_range: tuple[float, float] = Field((0.0, 0.3), description="random-shift strength (share of size)")
    flip_probability: float = Field(0.0, ge=0, le=1, description="horizontal flips (0 for digits and text)")
    erasing_probability: float = Field(0.0, ge=0, le=1, description="random erasing of one rectangle per image")
    warmup_epochs: float = Field(0.0, ge=0, description="linear learning-rate warm-up before the cosine decay")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="per-step EMA of the weights, which become the final "
                             "model; 0 = off")
    minutes: float | None = Field(None, gt=0, description="wall-time budget of one final training: the epochs "
                                  "are cut to what fits, re-planned after each one; null = no limit")
    tuning_minutes: float | None = Field(None, gt=0, description="wall-time budget of one architecture's tuning "
                                         "(Tune's time_budget_s); null = no limit")
    seed: int = 0

    @model_validator(mode="after")
    def _ranges_ordered(self) -> RetrainConfig:
        for name in ("lr_range", "weight_decay_range", "label_smoothing_range", "augmentation_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name}=[{low}, {high}] must satisfy 0 <= low <= high")
        return self


class ExportConfig(_Section):
    """Deployable formats and the parity check against onnxruntime."""

    formats: tuple[Literal["torchscript", "onnx"], ...] = ("torchscript", "onnx")
    onnx_opset: int = Field(18, ge=13, le=23)
    parity_atol: float = Field(1e-4, gt=0)


class Config(_Section):
    """The whole pipeline; every section has embedded defaults."""

    out_dir: Path = Field(Path("runs/default"), description="run directory (checkpoints, MLflow store, summary)")
    wall_time_minutes: float | None = Field(None, gt=0, description="budget of the whole run: the final training's "
                                            "epochs are planned within what the stages before it left, export "
                                            "included; null = the stages' own budgets only")
    data: DataConfig = DataConfig()
    space: SpaceConfig = SpaceConfig()
    budget: BudgetConfig = BudgetConfig()
    search: SearchConfig = SearchConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
    retrain: RetrainConfig = RetrainConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _latency_budget_is_measured_on_export(self) -> Config:
        if self.budget.metric == "latency" and self.budget.latency_runtime == "onnxruntime" \
                and self.retrain.enabled and "onnx" not in self.export.formats:
            raise ValueError("budget.metric=latency on budget.latency_runtime=onnxruntime needs 'onnx' in "
                             "export.formats (the champion rule checks the exported model's onnxruntime latency)")
        return self


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field; check the spelling against configs/example.yaml"
        got = f" (got {cut(repr(e['input']))})" if e["type"] not in ("missing", "model_type") and "input" in e else ""
        if isinstance(e.get("input"), dict):
            got = ""
        lines.append(f"  {field}: {message}{got}")
    return "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides (values parsed as YAML) to a raw config dict."""
    result = dict(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise ConfigError(f"--set {cut(item)}: the value is not valid YAML ({problem}); quote it or fix "
                              "the brackets") from None
    return result


_FILE_FIELDS = (("data", "path"), ("space", "file"))


def _relative_to(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a config file are relative to the file, not to the working directory."""
    raw = dict(raw)
    for section, key in _FILE_FIELDS:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            raw[section] = {**raw[section], key: str(base / value)}
    return raw


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read, override and validate; ``path=None`` means every embedded default."""
    raw: Any = {}
    source = "embedded defaults"
    if path is not None:
        source = str(path)
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read ({cut(str(err))})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {cut(str(err))}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
        raw = _relative_to(raw, Path(path).parent)
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
