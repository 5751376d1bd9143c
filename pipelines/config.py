"""Experiment configuration: one YAML file, validated into a frozen, fully resolved object.

The file declares everything about a sweep once (data, trainable, search, scheduler, metric and
mode, resources, storage, tracking). Unknown keys are errors; values are type-checked by pydantic;
rules that span sections (metric reported by the trainable, search space compatible with the
searcher) are checked in :mod:`pipelines.sweep.plan`. Every problem becomes a one-line
:class:`~pipelines.errors.ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipelines.errors import ConfigError
from pipelines.overrides import apply_overrides
from pipelines.paths import default_storage_path, default_tracking_uri
from pipelines.secrets import hold_credentials
from pipelines.uris import is_uri, with_endpoint
from search_spaces.messages import short
from search_spaces.yaml_input import check_shape, parse_yaml, read_yaml_text

Scalar = str | int | float | bool


class _Section(BaseModel):
    # Frozen so a resolved config cannot drift after it was logged; forbid so typos are errors.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_endpoint(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https:// (e.g. http://127.0.0.1:9000)")
    return value


class AugmentStepConfig(_Section):
    """One transform of the augmentation policy with fixed values (searched ones need neither)."""

    p: float = Field(1.0, ge=0.0, le=1.0)
    strength: float | None = None


class DataConfig(_Section):
    """Where the data comes from, how it is read and split, and how it is augmented."""

    dataset: str = "mnist5k"
    # A local file or folder, or a URI pyarrow opens (s3://bucket/prefix, gs://...): URIs
    # stream (see pipelines.data.stream_sweep). endpoint and region are storage's keys, for data.
    path: Path | str | None = None
    endpoint: str | None = None
    region: str | None = None
    modality: Literal["auto", "tabular", "image", "text", "audio"] = "auto"
    task: Literal["auto", "classification", "regression"] = "auto"
    label_column: str = "label"
    text_column: str | None = None
    feature_columns: list[str] | None = None
    image_size: tuple[int, int] | None = None
    max_tokens: int = Field(64, ge=4, le=1024)
    val_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    # Rows set aside for judging a retrained model against the champion; no trial sees them.
    holdout_fraction: float = Field(0.0, ge=0.0, lt=0.5)
    seed: int = 0
    cache: bool = True
    augment: dict[str, AugmentStepConfig] = Field(default_factory=dict)
    # Where image augmentation runs: "gpu" on the trial's device (torch trainables given a GPU),
    # "cpu" in numpy as the batches are made, "auto" on the device when the trial has one.
    augment_device: Literal["auto", "cpu", "gpu"] = "auto"
    # Stream Parquet from disk in row groups instead of holding the splits in Ray's object
    # store: true, false, or unset to stream sources above pipelines.data.stream_sweep's size.
    streaming: bool | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _uri_or_local_path(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.startswith("file://"):
            return Path(value.removeprefix("file://"))
        return value if is_uri(value) else Path(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_with_scheme(cls, value: str | None) -> str | None:
        return _http_endpoint(value)

    @property
    def is_remote(self) -> bool:
        """Whether ``path`` is an object-store URI rather than a local file or folder."""
        return isinstance(self.path, str)

    def source(self) -> str:
        """Return ``path`` as pyarrow opens it, with the endpoint and region folded in."""
        assert self.path is not None
        return with_endpoint(str(self.path), self.endpoint, self.region)

    def local_path(self) -> Path:
        """Return ``path``, a local file or folder (the in-memory readers take no URI)."""
        assert isinstance(self.path, Path), "a URI streams: see pipelines.data.stream_sweep"
        return self.path


class TrainableConfig(_Section):
    """Which trainable runs each trial, its fixed hyperparameters and its search space.

    Either a bundled ``model`` of ``framework``, or the user's own code as ``target``
    (``package.module:attribute``, see :mod:`trainables.targets`): a model builder for
    ``framework: torch`` or ``tensorflow``, a training function, or a trainable class.
    """

    framework: str | None = None
    model: str | None = None
    target: str | None = None
    search_space: Path
    params: dict[str, Scalar] = Field(default_factory=dict)
    # Metrics computed on the validation split beyond the trainable's own: library names
    # (val_f1_macro, val_roc_auc, val_r2, ...) or the user's functions as module:function.
    metrics: list[str] = Field(default_factory=list)

    @property
    def framework_name(self) -> str:
        """The bundled trainable's framework (torch unless set)."""
        return self.framework or "torch"


class SearchConfig(_Section):
    """How configurations are proposed."""

    method: str = "random"
    preset: str | None = None
    num_samples: int = Field(8, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    seed: int | None = 0
    time_budget_s: float | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)


class SchedulerConfig(_Section):
    """When trials are stopped early."""

    name: str = "fifo"
    options: dict[str, Any] = Field(default_factory=dict)


class ResourcesConfig(_Section):
    """Resources each trial reserves; fractions share a device between trials."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    # Data-parallel trials: with workers > 1 each trial is a Ray Train run of that many workers,
    # and cpu/gpu are per worker.
    workers: int = Field(1, ge=1)
    # A Ray label selector every trial's node must match ({pool: cpu}, {zone: "in(a, b)"}):
    # nodes get labels from `ray start --labels`. Ray packs trials (placement groups) onto GPU
    # nodes as readily as onto CPU ones; labels are how CPU-only trials are kept off them.
    node_labels: dict[str, str] = Field(default_factory=dict)


class FaultToleranceConfig(_Section):
    """Retries and checkpoint retention."""

    max_failures: int = Field(2, ge=0)
    checkpoint_every: int = Field(1, ge=1)
    checkpoints_to_keep: int = Field(2, ge=1)


class RuntimeConfig(_Section):
    """How the user's code and packages reach every node: a Ray runtime environment.

    ``working_dir`` (a folder uploaded to every node and made the trials' working directory),
    ``py_modules`` (folders of Python packages or modules put on the workers' path) and ``pip``
    (packages installed for the sweep's workers). Empty: every node imports what its own
    environment has, plus the user's module beside the config on a single machine.
    """

    working_dir: Path | None = None
    py_modules: list[Path] = Field(default_factory=list)
    pip: list[str] = Field(default_factory=list)

    @property
    def ships_code(self) -> bool:
        """Whether the runtime environment carries the user's code to the nodes."""
        return self.working_dir is not None or bool(self.py_modules)

    def ray_runtime_env(self) -> dict[str, Any] | None:
        """Return the ``runtime_env`` for ``ray.init`` (None when nothing is set)."""
        env: dict[str, Any] = {}
        if self.working_dir is not None:
            env["working_dir"] = str(self.working_dir)
        if self.py_modules:
            env["py_modules"] = [str(path) for path in self.py_modules]
        if self.pip:
            env["pip"] = list(self.pip)
        return env or None


class StorageConfig(_Section):
    """Where Ray Tune writes trial results and checkpoints (see :mod:`pipelines.sweep.storage`).

    ``path`` is a local folder (made absolute against the working directory), a folder every node
    mounts at the same path (NFS), or a URI that pyarrow's filesystems read: ``s3://bucket/prefix``,
    ``gs://bucket/prefix``. On a cluster of more than one node it must be shared; the sweep checks
    that from every node before Tune starts. ``endpoint`` points ``s3://`` at an S3-compatible
    store (MinIO, Ceph): ``http://host:9000``. Credentials never go here: every process reads them
    from its environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, or the node's role).
    """

    path: str = Field(default_factory=default_storage_path)
    endpoint: str | None = None
    region: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute_local_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder or a URI")
        if "://" in value:
            return value.removeprefix("file://") if value.startswith("file://") else value
        return str(Path(value).expanduser().resolve())

    @field_validator("endpoint")
    @classmethod
    def _endpoint_with_scheme(cls, value: str | None) -> str | None:
        return _http_endpoint(value)

    @property
    def is_local(self) -> bool:
        """Whether ``path`` is a folder of the local filesystem (NFS included), not a URI."""
        return "://" not in self.path


class TrackingConfig(_Section):
    """Where MLflow records the sweep."""

    # Validated even when defaulted: $MLFLOW_TRACKING_URI is where passwords are usually planted.
    uri: str = Field(default_factory=default_tracking_uri, validate_default=True)
    experiment: str | None = None
    register_model: bool = True

    @field_validator("uri")
    @classmethod
    def _without_credentials(cls, value: str) -> str:
        """Keep a password in the URI out of everything the config reaches (params, files)."""
        return hold_credentials(value)


class RetrainConfig(_Section):
    """How ``tunepipe retrain`` re-tunes, judges and promotes (see :mod:`pipelines.retrain`)."""

    num_samples: int = Field(4, ge=1)
    # The best earlier configurations, evaluated first on the new data.
    top_k: int = Field(3, ge=0)
    # The challenger must beat the champion's holdout score by more than this to be promoted.
    margin: float = Field(0.0, ge=0.0)
    # Used when data.holdout_fraction is 0: a retrain always judges on rows tuning never saw.
    holdout_fraction: float = Field(0.15, gt=0.0, lt=0.5)


class ExperimentConfig(_Section):
    """A whole sweep, fully resolved. Build it with :func:`load_config`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str
    mode: Literal["min", "max"]
    data: DataConfig = DataConfig()
    trainable: TrainableConfig
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    fault_tolerance: FaultToleranceConfig = FaultToleranceConfig()
    retrain: RetrainConfig = RetrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    # Factories, not instances: the default paths read TUNEPIPE_HOME when a config is loaded.
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data: Any) -> Any:
        """Fill the defaults that depend on other keys, before validation.

        ``trainable.framework`` is torch for a bundled model (a user's target names its own),
        and ``metric: module:function`` becomes the name it is reported under
        (``val_<function>``), the reference going to ``trainable.metrics``.
        """
        trainable = data.get("trainable") if isinstance(data, dict) else None
        if not isinstance(trainable, dict):
            return data
        if trainable.get("target") is None and trainable.get("framework") is None:
            trainable = {**trainable, "framework": "torch"}
        metric = data.get("metric")
        if isinstance(metric, str) and ":" in metric:
            metrics = list(trainable.get("metrics") or [])
            if metric not in metrics:
                metrics.append(metric)
            trainable = {**trainable, "metrics": metrics}
            data = {**data, "metric": f"val_{metric.rpartition(':')[2]}"}
        return {**data, "trainable": trainable}

    @property
    def experiment_name(self) -> str:
        """Name of the MLflow experiment (and of the registered model)."""
        return self.tracking.experiment or self.name

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved config as plain YAML-able data (paths as strings)."""
        return self.model_dump(mode="json")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every way it can fail is a one-line error."""
    if not path.is_file():
        raise ConfigError(
            "file not found", source=path, fix="check the path (it is relative to the cwd)"
        )

    def error(rule: str, fix: str) -> ConfigError:
        return ConfigError(rule, fix=fix, source=path)

    try:
        data = parse_yaml(read_yaml_text(path, error), yaml.SafeLoader, error)
    except FileNotFoundError:  # deleted since the check above
        raise error("file not found", "check the path (it is relative to the cwd)") from None
    except yaml.YAMLError as exc:
        raise error(f"invalid YAML{_yaml_problem(exc)}", "correct the YAML syntax") from None
    if data is None:
        raise ConfigError("the file is empty", source=path, fix="write an experiment config")
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {type(data).__name__}",
            source=path,
            fix="start the file with keys such as 'name:', 'metric:', 'trainable:'",
        )
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Return `` at line N: problem`` for a YAML error (marks count from 0, editors from 1)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark is not None else ""
    # A ReaderError (a control character, as in a binary file) has a reason, not a problem.
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
    return f"{where}: {problem}"


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment config.

    Args:
        path: The experiment YAML file.
        overrides: Dotted keys to replace, e.g. ``{"search.num_samples": 8}``.

    Returns:
        The validated, fully resolved configuration (relative paths resolved against the file).

    Raises:
        ConfigError: With file, key, rule and fix, for any invalid input.

    """
    path = Path(path)
    return config_from_mapping(read_yaml_mapping(path), overrides, source=path)


def config_from_mapping(
    raw: dict[str, Any],
    overrides: dict[str, Any] | None = None,
    *,
    source: Path | None = None,
    base: Path | None = None,
) -> ExperimentConfig:
    """Validate an experiment config given as a mapping (a notebook's dict, a parsed file).

    Args:
        raw: The config, as the YAML file would hold it.
        overrides: Dotted keys to replace, e.g. ``{"search.num_samples": 8}``.
        source: The file it came from (named in errors; relative paths resolve against its
            folder), or None for a config built in Python.
        base: The folder relative paths resolve against when there is no source (default: the
            working directory).

    Raises:
        ConfigError: With the key, rule and fix, for any invalid input.

    """
    where = source if source is not None else "config"

    def error(rule: str, fix: str) -> ConfigError:
        return ConfigError(rule, fix=fix, source=where)

    # A mapping from Python or --set can be as deep or self-referencing as a file can.
    check_shape(raw, error)
    check_shape(overrides, error)
    raw = apply_overrides(raw, overrides or {}, source=where)
    try:
        config = ExperimentConfig.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise _first_error(exc, where) from None
    _check_loop_params(config.trainable.params, where)
    folder = source.parent if source is not None else (base or Path.cwd())
    return _resolve_paths(config, folder)


#: Fixed hyperparameters the pipeline itself reads (the schedulers' horizon, the dry run's
#: rows), so their type is checked here rather than inside a trial.
_LOOP_PARAMS = ("epochs", "batch_size")


def _check_loop_params(params: dict[str, Any], source: Path | str) -> None:
    """Refuse a fixed ``epochs`` or ``batch_size`` that is not a positive integer."""
    for name in _LOOP_PARAMS:
        value = params.get(name)
        if value is not None and (type(value) is not int or value < 1):
            raise ConfigError(
                f"must be a positive integer, got {short(value)}",
                source=source,
                key=f"trainable.params.{name}",
                fix=f"write e.g. {name}: 8",
            )


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Make file paths in the config absolute, relative to the config file's folder."""
    trainable = config.trainable.model_copy(
        update={"search_space": _resolve_search_space(config.trainable.search_space, base)}
    )
    data = config.data
    if isinstance(data.path, Path) and not data.path.is_absolute():
        data = data.model_copy(update={"path": (base / data.path).resolve()})
    runtime = config.runtime.model_copy(
        update={
            "working_dir": None
            if config.runtime.working_dir is None
            else (base / config.runtime.working_dir).resolve(),
            "py_modules": [(base / path).resolve() for path in config.runtime.py_modules],
        }
    )
    return config.model_copy(update={"trainable": trainable, "data": data, "runtime": runtime})


def _resolve_search_space(path: Path, base: Path) -> Path:
    """Resolve a search-space path: relative to the config, else a name in the bundled library."""
    if path.is_absolute():
        return path
    candidate = (base / path).resolve()
    if candidate.exists():
        return candidate
    library = Path(__file__).resolve().parent.parent / "search_spaces" / "library"
    named = library / (path.name if path.suffix else f"{path.name}.yaml")
    return named if named.exists() else candidate


def _first_error(exc: ValidationError, source: Path | str) -> ConfigError:
    """Turn pydantic's first error into a one-line ConfigError with a fix."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        section = _section_for(error["loc"][:-1])
        valid = ", ".join(sorted(section.model_fields)) if section else "see the README"
        return ConfigError(
            "unknown key", source=source, key=key, fix=f"remove it or use one of: {valid}"
        )
    if kind == "missing":
        return ConfigError("required key is missing", source=source, key=key, fix="add it")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return ConfigError(
            f"{short(value)} is not allowed", source=source, key=key, fix=f"use one of {expected}"
        )
    return ConfigError(
        f"{error['msg'].rstrip('.')}, got {short(value, 200)}",
        source=source,
        key=key,
        fix="correct the value's type or range",
    )


def _section_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Find the config model at ``loc`` so an unknown-key error can list the valid keys."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
