"""The rules a sweep's config must keep across its sections, each a function of its own.

:func:`pipelines.sweep.plan.plan_sweep` runs them in order; each raises a one-line
:class:`~pipelines.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.augment.device import augments_on_device
from pipelines.augment.policy import hparam_keys as augment_hparam_keys
from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError, SearchSpaceError, UserInputError
from pipelines.sweep import strategies
from pipelines.sweep.strategies import Scheduler, Searcher
from search_spaces import SearchSpace
from trainables.errors import HyperparameterError
from trainables.metrics import library_names, reported_name, unknown_metrics
from trainables.precision_settings import precision_settings
from trainables.registry import TRAINABLES, TrainableInfo
from trainables.targets import BUILDER_FRAMEWORKS, resolve_target


def trainable_info(
    config: ExperimentConfig, target: Any = None, search_paths: Sequence[Path] | None = None
) -> TrainableInfo:
    """Return the config's trainable entry, checking it is installed and builds the model.

    Args:
        config: The experiment config.
        target: The user's trainable passed from Python (a function or class); None: the
            config's ``trainable.target``, if any, else a bundled model.
        search_paths: Where the user's module is looked for (default: the config file's
            folder, then the working directory).

    Raises:
        ConfigError: For an unknown framework or model, or a framework that is not installed.
        UserCodeError: For a user's target that does not resolve (see trainables.targets).

    """
    section = config.trainable
    target = target if target is not None else section.target
    if target is not None:
        if section.model is not None:
            raise ConfigError(
                "trainable.model names a bundled model, trainable.target the user's own",
                key="trainable.model",
                fix="keep one of the two",
            )
        base = section.framework if section.framework in BUILDER_FRAMEWORKS else None
        if base is not None:
            _check_installed(TRAINABLES[base])
            # The framework's runtime settings (TensorFlow's logging, for one) come before the
            # user's module imports the framework itself.
            TRAINABLES[base].load_class()
        paths = _search_paths(config) if search_paths is None else list(search_paths)
        info = resolve_target(target, section.framework, paths)
        if config.runtime.ships_code:
            # The runtime environment carries the code to every node: the workers import it
            # from there, never from a path that exists only on this machine.
            info = dataclasses.replace(info, search_path=None)
        return info
    framework = section.framework_name
    bundled = [name for name, entry in TRAINABLES.items() if not entry.user_code]
    if framework not in bundled:
        fix = f"use one of: {', '.join(bundled)}"
        if framework in TRAINABLES:  # "function": a training function needs its target
            fix = "set trainable.target to your training function, package.module:function"
        raise ConfigError(f"unknown framework {framework!r}", key="trainable.framework", fix=fix)
    info = TRAINABLES[framework]
    _check_installed(info)
    if section.model is None:
        raise ConfigError(
            "required key is missing",
            key="trainable.model",
            fix=f"add it ({', '.join(info.models)}), or set trainable.target to your own model",
        )
    if section.model not in info.models:
        raise ConfigError(
            f"unknown {framework} model {section.model!r}",
            key="trainable.model",
            fix=f"use one of: {', '.join(info.models)}",
        )
    return info


def _check_installed(info: TrainableInfo) -> None:
    missing = info.missing_modules()
    if missing:  # found now, not as the same ImportError in every trial
        raise ConfigError(
            f"the {info.framework} trainable needs {', '.join(missing)}, which is not installed",
            key="trainable.framework",
            fix=info.install_hint,
        )


def _search_paths(config: ExperimentConfig) -> list[Path]:
    """Return where the user's module is looked for, in order.

    The config file's folder, the folders the runtime environment ships (``working_dir``, the
    parents of ``py_modules``), then the working directory.
    """
    paths = [config.source.resolve().parent] if config.source is not None else []
    runtime = config.runtime
    if runtime.working_dir is not None:
        paths.append(runtime.working_dir)
    paths += [module.parent for module in runtime.py_modules]
    return [*dict.fromkeys([*paths, Path.cwd()])]


def check_hparams(config: ExperimentConfig, info: TrainableInfo, space: SearchSpace) -> None:
    """Refuse a hyperparameter both fixed and searched, an unknown one, or a missing one."""
    fixed = set(config.trainable.params)
    searched = set(space.names())
    both = sorted(fixed & searched)
    if both:
        raise ConfigError(
            f"{both[0]!r} is both fixed here and searched in {space.source}",
            key=f"trainable.params.{both[0]}",
            fix="remove it from one of the two",
        )
    known = info.accepted_hparams()
    accepted = None if known is None else known | augment_hparam_keys()
    unknown = [] if accepted is None else sorted((fixed | searched) - accepted - {"model"})
    if accepted is not None and unknown:
        raise ConfigError(
            f"the {info.framework} trainable has no hyperparameter {unknown[0]!r}",
            key=f"trainable.params.{unknown[0]}"
            if unknown[0] in fixed
            else "trainable.search_space",
            fix=f"use one of: {', '.join(sorted(accepted))}",
        )
    for name in info.required_hparams:
        if name not in fixed | searched:
            raise ConfigError(
                f"hyperparameter {name!r} is not set",
                key=f"trainable.params.{name}",
                fix=f"set trainable.params.{name} or search over it",
            )


def check_metric(config: ExperimentConfig, info: TrainableInfo, task: str) -> None:
    """Refuse a metric the trainable never reports for the data's task.

    Known are the trainable's own (its registry entry, or a user class's declared ``metrics``),
    the library's for the task and the user's metric functions. The user's code that declares
    nothing is checked by a dry run before the sweep instead.
    """
    unknown = unknown_metrics(config.trainable.metrics, task)
    if unknown:
        raise ConfigError(
            f"unknown metric {unknown[0]!r} for {task}",
            key="trainable.metrics",
            fix=f"use one of: {', '.join(library_names(task))}, or a module:function",
        )
    own = info.metrics.get(task, ())
    if info.user_code and not own:
        return  # not declared: the dry run finds out
    known = (*own, *library_names(task), *(reported_name(m) for m in config.trainable.metrics))
    if config.metric not in known:
        raise ConfigError(
            f"the {info.framework} trainable never reports {config.metric!r} for {task}",
            key="metric",
            fix=f"use one of: {', '.join(dict.fromkeys(known))}",
        )


def extra_metrics(config: ExperimentConfig, info: TrainableInfo, task: str) -> tuple[str, ...]:
    """Return the metrics computed on the validation split beyond the trainable's own.

    They are ``trainable.metrics``, and ``metric`` when it is a library metric.
    """
    names = list(config.trainable.metrics)
    if config.metric in library_names(task) and config.metric not in info.metrics.get(task, ()):
        names.append(config.metric)
    return tuple(dict.fromkeys(names))


def check_registration(config: ExperimentConfig, info: TrainableInfo) -> None:
    """Refuse to plan a sweep whose best model could not be registered when it ends.

    A training function hands its model over at run time (``ctx.log_model``), and a user's
    trainable class is registered as its checkpoint behind a pyfunc wrapper: nothing to check.
    """
    registrable = info.can_export or info.own_loop or info.user_code
    if config.tracking.register_model and not registrable:
        raise ConfigError(
            f"the {info.framework} trainable cannot log its model to MLflow",
            key="tracking.register_model",
            fix="set tracking.register_model: false",
        )


def max_epochs(config: ExperimentConfig, space: SearchSpace) -> int:
    """Return the most epochs any trial can run (the scheduler's horizon)."""
    if "epochs" in config.trainable.params:
        return int(config.trainable.params["epochs"])
    spec = space.params["epochs"]
    candidates = [getattr(spec, a) for a in ("high", "value") if hasattr(spec, a)]
    if not candidates:
        candidates = list(getattr(spec, "values"))  # noqa: B009 - categorical or grid spec
    # A choice of "epochs" may hold anything YAML can write; only whole numbers are epochs.
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in candidates):
        raise ConfigError(
            f"epochs must be numbers, the search space gives {candidates!r}",
            key="search_space.epochs",
            fix="give epochs as whole numbers (e.g. values: [5, 10, 20])",
        )
    return int(max(candidates))


def strategy_names(config: ExperimentConfig) -> tuple[str, str]:
    """Return the names of (searcher, scheduler), expanding a preset into its pair.

    Raises:
        ConfigError: For an unknown preset, or a preset contradicted by an explicit name.

    """
    method, scheduler = config.search.method, config.scheduler.name
    if config.search.preset is not None:
        if config.search.preset not in strategies.PRESETS:
            raise ConfigError(
                f"unknown preset {config.search.preset!r}",
                key="search.preset",
                fix=f"use one of: {', '.join(strategies.PRESETS)}",
            )
        preset = strategies.PRESETS[config.search.preset]
        explicit = [
            (key, value, wanted)
            for key, value, wanted, fields in (
                ("search.method", method, preset[0], config.search.model_fields_set),
                ("scheduler.name", scheduler, preset[1], config.scheduler.model_fields_set),
            )
            if key.split(".")[1] in fields and value != wanted
        ]
        if explicit:
            key, value, wanted = explicit[0]
            raise ConfigError(
                f"preset {config.search.preset!r} uses {wanted!r}, but {value!r} is set",
                key=key,
                fix="remove the key or the preset",
            )
        method, scheduler = preset
    return method, scheduler


def check_strategy_pair(searcher: Searcher, scheduler: Scheduler) -> None:
    """Refuse a scheduler that changes hyperparameters under a searcher that cannot follow."""
    if scheduler.mutates_hparams and not searcher.follows_mutations:
        followers = [s.name for s in strategies.SEARCHERS.values() if s.follows_mutations]
        raise ConfigError(
            f"scheduler {scheduler.name!r} changes hyperparameters during a trial, which "
            f"searcher {searcher.name!r} cannot follow",
            key="search.method",
            fix=f"use search.method: {' or '.join(followers)} with this scheduler",
        )


def check_combinations(config: ExperimentConfig, space: SearchSpace) -> None:
    """Reject hyperparameter combinations that cannot mean anything."""
    schedule = config.trainable.params.get("lr_schedule", "constant")
    hypergradient = config.trainable.params.get("hypergradient") is True
    if (hypergradient or "hypergradient" in space.names()) and (
        "lr_schedule" in space.names() or schedule != "constant"
    ):
        raise ConfigError(
            "hypergradient descent sets the learning rate itself; an lr_schedule would fight it",
            key="trainable.params.lr_schedule",
            fix="use lr_schedule: constant (or drop it) with hypergradient",
        )


def check_precision(config: ExperimentConfig, space: SearchSpace) -> None:
    """Refuse a ``precision`` or ``compile`` value no trial could run, before any cluster work.

    Values fixed in ``trainable.params`` and every value the search space can draw are checked
    (see :mod:`trainables.precision_settings`); fp16 needs the trials to have a GPU. Whether the
    GPU has bf16 units is only known on it: a trial that finds it has none fails at once.
    """
    for name in ("precision", "compile"):
        for value in _possible_values(config, space, name):
            try:
                settings = precision_settings({name: value})
            except HyperparameterError as exc:
                raise _refuse(config, space, name, exc.rule, exc.fix) from None
            if settings.precision == "fp16" and config.resources.gpu == 0:
                raise _refuse(
                    config,
                    space,
                    name,
                    "precision fp16 needs a CUDA GPU and the trials are given none",
                    "set resources.gpu (e.g. 0.25 to pack four trials per GPU) or use bf16",
                )


def _refuse(
    config: ExperimentConfig, space: SearchSpace, name: str, rule: str, fix: str
) -> UserInputError:
    """Return the error naming where ``name`` is set: the config's params or the space file."""
    if name in config.trainable.params:
        return ConfigError(rule, key=f"trainable.params.{name}", fix=fix)
    return SearchSpaceError(rule, key=name, fix=fix, source=space.source)


def _possible_values(config: ExperimentConfig, space: SearchSpace, name: str) -> list[Any]:
    """Return each value hyperparameter ``name`` can take in this sweep."""
    if name in config.trainable.params:
        return [config.trainable.params[name]]
    spec = space.params.get(name)
    if spec is None:
        return []
    if hasattr(spec, "values"):
        return list(spec.values)
    if hasattr(spec, "value"):
        return [spec.value]
    return [None]  # a numeric range: never a precision


def check_augment_device(config: ExperimentConfig, info: TrainableInfo) -> None:
    """Refuse ``data.augment_device: gpu`` where no trial could augment on a GPU.

    Whether the node's CUDA works is only known in the trial (which then fails at once); the
    config alone already tells a sweep whose trials have no GPU, or whose trainable is not the
    torch one (the only trainable that takes batches as tensors on its device).
    """
    device = "cuda" if config.resources.gpu > 0 else "cpu"
    augments_on_device(config.data.augment_device, device, info.batch_framework)


def check_workers(config: ExperimentConfig, info: TrainableInfo) -> None:
    """Refuse data-parallel trials (``resources.workers`` > 1) for what cannot run them.

    The bundled torch and Keras trainables run them (built-in models or the user's model
    builder): DistributedDataParallel, MultiWorkerMirroredStrategy. Scikit-learn, a training
    function and a user's own trainable class do not (yet); nor do the Keras settings whose
    state would differ on each replica (fixed here; searched ones fail their trial at once).
    """
    workers = config.resources.workers
    if workers <= 1:
        return
    if info.batch_framework not in ("torch", "tensorflow"):
        raise ConfigError(
            f"data-parallel trials (resources.workers: {workers}) need the torch or Keras "
            f"trainable or a model builder, not the {info.framework} "
            f"{'training function' if info.own_loop else 'trainable'}",
            key="resources.workers",
            fix="set resources.workers: 1, or tune a torch or Keras model",
        )
    if info.batch_framework != "tensorflow":
        return
    params = config.trainable.params
    refused = {
        "hyper_lr": "hypergradient descent",
        "compile": "compile (XLA)",
    }
    for key, what in refused.items():
        if params.get(key) not in (None, False):
            raise ConfigError(
                f"{what} is not supported in data-parallel Keras trials yet",
                key=f"trainable.params.{key}",
                fix=f"drop trainable.params.{key}, or set resources.workers: 1",
            )
    if params.get("precision") == "fp16":
        raise ConfigError(
            "precision fp16 is not supported in data-parallel Keras trials yet",
            key="trainable.params.precision",
            fix="use precision: bf16, or set resources.workers: 1",
        )


def check_node_labels(config: ExperimentConfig) -> None:
    """Refuse a malformed label selector, and one on data-parallel trials (not yet supported).

    Ray checks a selector only when a trial's placement group is created, long after the sweep
    started; its own rules are applied here instead.
    """
    labels = config.resources.node_labels
    if not labels:
        return
    from ray._private.label_utils import validate_label_selector

    problem = validate_label_selector(dict(labels))
    if problem:
        raise ConfigError(
            f"resources.node_labels is not a Ray label selector: {problem}",
            key="resources.node_labels",
            fix='use {key: value}, {key: "!value"}, {key: "in(a, b)"} or {key: "!in(a, b)"}',
        )
    if config.resources.workers > 1:
        raise ConfigError(
            "resources.node_labels does not reach the workers of data-parallel trials yet",
            key="resources.node_labels",
            fix="drop resources.node_labels, or set resources.workers: 1",
        )
