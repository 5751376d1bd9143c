"""Unit tests for conditional parameters (``when``): parsing, active(), and every searcher.

No Ray cluster is started: Optuna studies, HyperOpt sampling and the Ray searcher adapters all
run in-process.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from hyperopt.pyll.stochastic import sample as hyperopt_sample
from ray import cloudpickle
from ray.tune.search import sample
from ray.tune.search.hyperopt import HyperOptSearch
from ray.tune.search.optuna import OptunaSearch

from pipelines.errors import SearchSpaceError
from search_spaces import (
    CategoricalSpec,
    Condition,
    IntSpec,
    LogUniformSpec,
    SearchSpace,
    UniformSpec,
    flatten_sample,
    grid_size,
    load_search_space,
)
from tests.support.spaces import LIBRARY, assert_user_error, convert_for, flat_domains, write

OPTIMISER = """
parameters:
  optimizer:    {type: categorical, values: [sgd, rmsprop, adam, adamw]}
  momentum:     {type: uniform, low: 0.0, high: 0.95, when: {optimizer: [sgd, rmsprop]}}
  nesterov:     {type: categorical, values: [false, true], when: {optimizer: sgd}}
  beta1:        {type: uniform, low: 0.8, high: 0.95, when: {optimizer: [adam, adamw]}}
  lr_schedule:  {type: categorical, values: [constant, step, cosine]}
  lr_step_size: {type: int, low: 2, high: 5, when: {lr_schedule: step}}
  lr:           {type: loguniform, low: 1.0e-4, high: 1.0e-1}
  shift:        {type: int, low: 0, high: 2}
  flip:         {type: constant, value: 0.0}
"""
# A chain: decay_epochs is active only when lr_schedule is step, which needs optimizer sgd.
CHAIN = """
parameters:
  optimizer:    {type: categorical, values: [sgd, adam]}
  lr_schedule:  {type: categorical, values: [constant, step], when: {optimizer: sgd}}
  decay_epochs: {type: int, low: 1, high: 3, when: {lr_schedule: step}}
"""
SMALL_GRID = """
parameters:
  optimizer: {type: categorical, values: [sgd, adam]}
  momentum:  {type: grid, values: [0.0, 0.9], when: {optimizer: sgd}}
"""


def load(tmp_path: Path, text: str) -> SearchSpace:
    return load_search_space(write(tmp_path, text))


def expected_active(config: dict[str, Any]) -> set[str]:
    """The active names of an OPTIMISER config, written out by hand."""
    names = {"optimizer", "lr_schedule", "lr", "shift", "flip"}
    if config["optimizer"] in ("sgd", "rmsprop"):
        names.add("momentum")
    if config["optimizer"] == "sgd":
        names.add("nesterov")
    if config["optimizer"] in ("adam", "adamw"):
        names.add("beta1")
    if config["lr_schedule"] == "step":
        names.add("lr_step_size")
    return names


def assert_valid_optimiser_config(config: dict[str, Any]) -> None:
    assert set(config) == expected_active(config), config
    assert 0.0 <= config.get("momentum", 0.0) <= 0.95
    assert 0.8 <= config.get("beta1", 0.8) <= 0.95
    assert config.get("lr_step_size", 2) in range(2, 6)
    assert 1e-4 <= config["lr"] <= 1e-1
    assert config["shift"] in (0, 1, 2)
    assert config["flip"] == 0.0


# --- parsing ----------------------------------------------------------------------------------


def test_when_parses_one_value_or_a_list(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    assert space.params["momentum"].when == Condition(
        parent="optimizer", values=("sgd", "rmsprop")
    )
    assert space.params["nesterov"].when == Condition(parent="optimizer", values=("sgd",))
    assert space.params["optimizer"].when is None
    assert space.is_conditional()
    assert space.children("optimizer") == ["momentum", "nesterov", "beta1"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimiser: sgd}}\n",
            "unknown parent 'optimiser' (did you mean 'optimizer'?)",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {momentum: sgd}}\n",
            "cannot depend on itself",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {lr: 0.1}}\n",
            "parent 'lr' is type: loguniform",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimizer: [sgd, nadam]}}\n",
            "'nadam' is not a value of parent 'optimizer'",
        ),
        (
            "  nesterov: {type: categorical, values: [false, true], when: {optimizer: 1}}\n",
            "1 is not a value of parent 'optimizer'",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimizer: sgd, lr: 1}}\n",
            "when must map exactly one parent",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimizer: []}}\n",
            "when lists no parent values",
        ),
        (
            "  momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimizer: [[sgd]]}}\n",
            "parent value must be a str",
        ),
    ],
)
def test_bad_when_gives_one_line_error(tmp_path: Path, params: str, expected: str) -> None:
    head = (
        "parameters:\n"
        "  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}\n"
        "  optimizer: {type: categorical, values: [sgd, adam]}\n"
    )
    path = write(tmp_path, head + params, name="bad_when.yaml")
    child = params.split(":")[0].strip()
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert expected in assert_user_error(info.value, path, f"parameters.{child}.when")


def test_parent_declared_after_child_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        parameters:
          momentum:  {type: uniform, low: 0.0, high: 0.9, when: {optimizer: sgd}}
          optimizer: {type: categorical, values: [sgd, adam]}
        """,
    )
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    message = assert_user_error(info.value, path, "parameters.momentum.when")
    assert "parent 'optimizer' is declared after 'momentum'" in message
    assert "move 'optimizer' above 'momentum'" in info.value.fix


def test_grid_and_constant_parents_are_allowed(tmp_path: Path) -> None:
    space = load(
        tmp_path,
        """
        parameters:
          bs:   {type: grid, values: [32, 64]}
          opt:  {type: constant, value: sgd}
          lr:   {type: grid, values: [0.1], when: {bs: 64}}
          mom:  {type: grid, values: [0.0, 0.9], when: {opt: sgd}}
        """,
    )
    assert grid_size(space) == 2 + 1 * 2  # bs=32: 2 momenta; bs=64: 1 lr x 2 momenta


def test_unknown_key_fix_lists_when_last(tmp_path: Path) -> None:
    path = write(tmp_path, "parameters:\n  lr: {type: uniform, lo: 0.1, high: 0.2}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert "type, low, high, when" in info.value.fix


# --- active() ---------------------------------------------------------------------------------


def test_active_drops_inactive_children_and_keeps_other_keys(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    full = {
        "optimizer": "adam",
        "momentum": 0.5,
        "nesterov": True,
        "beta1": 0.9,
        "lr_schedule": "step",
        "lr_step_size": 3,
        "epochs": 4,  # not a search-space parameter: always kept
    }
    assert space.active(full) == {
        "optimizer": "adam",
        "beta1": 0.9,
        "lr_schedule": "step",
        "lr_step_size": 3,
        "epochs": 4,
    }
    sgd = space.active({**full, "optimizer": "sgd", "lr_schedule": "cosine"})
    assert sgd == {
        "optimizer": "sgd",
        "momentum": 0.5,
        "nesterov": True,
        "lr_schedule": "cosine",
        "epochs": 4,
    }
    assert "nesterov" not in space.active({**full, "optimizer": "rmsprop"})
    assert "momentum" in space.active({**full, "optimizer": "rmsprop"})


def test_active_follows_chains(tmp_path: Path) -> None:
    space = load(tmp_path, CHAIN)
    full = {"optimizer": "sgd", "lr_schedule": "step", "decay_epochs": 2}
    assert space.active(full) == full
    assert space.active({**full, "lr_schedule": "constant"}) == {
        "optimizer": "sgd",
        "lr_schedule": "constant",
    }
    # An inactive parent deactivates its children, whatever value it was sampled with.
    assert space.active({**full, "optimizer": "adam"}) == {"optimizer": "adam"}
    # A parent missing from the config leaves its children inactive too.
    assert space.active({"decay_epochs": 2, "lr_schedule": "step"}) == {}


def test_bool_parent_values_do_not_match_ints(tmp_path: Path) -> None:
    space = load(
        tmp_path,
        """
        parameters:
          flag: {type: categorical, values: [false, true, 1]}
          x:    {type: uniform, low: 0.0, high: 1.0, when: {flag: true}}
        """,
    )
    assert space.active({"flag": True, "x": 0.5}) == {"flag": True, "x": 0.5}
    assert space.active({"flag": 1, "x": 0.5}) == {"flag": 1}


def test_sample_defaults_are_active_only(tmp_path: Path) -> None:
    defaults = load(tmp_path, OPTIMISER).sample_defaults()
    assert defaults["optimizer"] == "sgd"
    assert set(defaults) == expected_active(defaults)


# --- grid -------------------------------------------------------------------------------------


def test_grid_expands_children_only_where_active(tmp_path: Path) -> None:
    converted = convert_for(load(tmp_path, SMALL_GRID), "grid")
    # One placeholder domain per grid key, holding exactly the grid's values (Ray resolves
    # points against the space; inactive keys it fills in are dropped by active()).
    assert {k: sorted(d.categories, key=str) for k, d in converted.param_space.items()} == {
        "optimizer": ["adam", "sgd"],
        "momentum": [0.0, 0.9],
    }
    assert converted.points_to_evaluate == [
        {"optimizer": "sgd", "momentum": 0.0},
        {"optimizer": "sgd", "momentum": 0.9},
        {"optimizer": "adam"},
    ]
    assert converted.num_points == 3
    assert grid_size(load(tmp_path, SMALL_GRID)) == 3


def test_grid_follows_chains_and_keeps_constants(tmp_path: Path) -> None:
    space = load(tmp_path, CHAIN + "  flip: {type: constant, value: 0.0}\n")
    points = convert_for(space, "grid").points_to_evaluate
    assert points is not None
    assert sorted(points, key=str) == sorted(
        [
            {"optimizer": "sgd", "lr_schedule": "constant", "flip": 0.0},
            *(
                {"optimizer": "sgd", "lr_schedule": "step", "decay_epochs": d, "flip": 0.0}
                for d in (1, 2, 3)
            ),
            {"optimizer": "adam", "flip": 0.0},
        ],
        key=str,
    )
    assert grid_size(space) == len(points) == 5
    assert all(space.active(p) == p for p in points)


def test_grid_rejects_continuous_conditional_params(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    with pytest.raises(SearchSpaceError) as info:
        convert_for(space, "grid")
    assert "continuous" in assert_user_error(info.value, space.source, "parameters.momentum")


def test_flat_domains_refuse_conditional_spaces_except_random(tmp_path: Path) -> None:
    space = load(tmp_path, SMALL_GRID)
    for method in ("grid", "tpe"):
        with pytest.raises(SearchSpaceError) as info:
            flat_domains(space, method)
        assert "searcher_space" in info.value.fix
        assert info.value.key == "parameters.momentum.when"


# --- random -----------------------------------------------------------------------------------


def test_random_samples_everything_and_active_drops_the_rest(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    converted = convert_for(space, "random")
    domains = converted.param_space
    assert list(domains) == space.names()
    assert converted.native is converted.native is None
    assert isinstance(domains["momentum"], sample.Float)
    assert (domains["lr_step_size"].lower, domains["lr_step_size"].upper) == (2, 6)
    rng = np.random.default_rng(0)
    seen = Counter()
    for _ in range(200):
        config = {
            name: d.sample(random_state=rng) if isinstance(d, sample.Domain) else d
            for name, d in domains.items()
        }
        active = space.active(config)
        assert_valid_optimiser_config(active)
        seen[active["optimizer"]] += 1
    assert set(seen) == {"sgd", "rmsprop", "adam", "adamw"}


def test_random_refuses_a_conditional_grid_param(tmp_path: Path) -> None:
    space = load(tmp_path, SMALL_GRID)
    with pytest.raises(SearchSpaceError) as info:
        convert_for(space, "random")
    assert "repeat trials" in assert_user_error(info.value, space.source, "parameters.momentum")


# --- Optuna (tpe, gp) -------------------------------------------------------------------------


def _sampler(name: str) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    # Each GP trial fits a model (~0.3 s); 15 of them still exercise the GP path. GPSampler
    # samples conditional parameters independently (dynamic space), which it warns about.
    return optuna.samplers.GPSampler(seed=0, n_startup_trials=15, warn_independent_sampling=False)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """GPSampler fits tiny models with torch; its thread pool only adds contention (3x slower)."""
    torch = pytest.importorskip("torch")  # GPSampler needs torch, an optional dependency
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["tpe", "gp"])
def test_optuna_define_by_run_suggests_only_active_params(
    tmp_path: Path, method: str, request: pytest.FixtureRequest
) -> None:
    if method == "gp":
        request.getfixturevalue("one_torch_thread")
    space = load(tmp_path, OPTIMISER)
    converted = convert_for(space, method)
    assert converted.param_space == {}
    define = converted.native
    assert define is not None
    returned: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        config = define(trial)
        assert config is not None
        returned.append(config)
        return config["lr"] + config.get("momentum", 0.0) + config["shift"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=_sampler(method))
    study.optimize(objective, n_trials=30)
    for trial, config in zip(study.trials, returned, strict=True):
        assert_valid_optimiser_config(config)
        # Optuna recorded exactly the active, searched parameters (constants are not asked).
        assert set(trial.params) == expected_active(config) - {"flip"}
        assert trial.params == {k: v for k, v in config.items() if k != "flip"}
    dist = study.trials[0].distributions
    assert (dist["shift"].low, dist["shift"].high) == (0, 2)  # inclusive, as in the file
    assert dist["lr"].log
    assert {c["shift"] for c in returned} == {0, 1, 2}
    assert len({c["optimizer"] for c in returned}) == 4


def test_optuna_quantized_and_logint_stay_on_their_grid(tmp_path: Path) -> None:
    space = load(
        tmp_path,
        """
        parameters:
          q: {type: quantized, low: 0.05, high: 0.72, q: 0.1}
          units: {type: logint, low: 1, high: 4}
        """,
    )
    define = convert_for(space, "gp").native
    assert define is not None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: float(len(define(trial) or {})), n_trials=200)
    qs = {round(t.params["q"], 9) for t in study.trials}  # float noise as in Ray's quniform
    assert qs == {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}  # multiples of q, not low + k*q
    assert {t.params["units"] for t in study.trials} == {1, 2, 3, 4}


def test_model_based_methods_reject_grid_type(tmp_path: Path) -> None:
    space = load(tmp_path, SMALL_GRID)
    for method in ("tpe", "gp", "hyperopt"):
        with pytest.raises(SearchSpaceError) as info:
            convert_for(space, method)
        assert f"{method!r}" in assert_user_error(info.value, space.source, "parameters.momentum")


def test_ray_optuna_search_uses_the_define_by_run_space(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    searcher = OptunaSearch(
        space=convert_for(space, "tpe").native,
        sampler=optuna.samplers.TPESampler(seed=0),
        metric="loss",
        mode="min",
    )
    searcher = cloudpickle.loads(cloudpickle.dumps(searcher))  # Tune checkpoints the searcher
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        assert_valid_optimiser_config(space.active(flatten_sample(config)))
        assert set(config) == expected_active(config)  # constants come through the return


# --- HyperOpt ---------------------------------------------------------------------------------


def test_hyperopt_samples_flatten_to_exactly_the_active_params(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    converted = convert_for(space, "hyperopt")
    assert converted.param_space == {}
    assert converted.native is not None
    rng = np.random.default_rng(0)
    samples = [hyperopt_sample(converted.native, rng=rng) for _ in range(200)]
    flat = [flatten_sample(s) for s in samples]
    for config in flat:
        # Nothing inactive was sampled, so active() has nothing left to drop.
        assert space.active(config) == config
        assert_valid_optimiser_config(config)
        assert all(isinstance(config[k], int) for k in ("shift", "lr_step_size") if k in config)
    assert {c["lr_step_size"] for c in flat if "lr_step_size" in c} == {2, 3, 4, 5}
    assert {c["shift"] for c in flat} == {0, 1, 2}
    assert {c["optimizer"] for c in flat} == {"sgd", "rmsprop", "adam", "adamw"}
    assert {c["nesterov"] for c in flat if "nesterov" in c} == {False, True}


def test_hyperopt_space_is_nested_by_parent(tmp_path: Path) -> None:
    space = load(tmp_path, CHAIN)
    hspace = convert_for(space, "hyperopt").native
    rng = np.random.default_rng(1)
    samples = [hyperopt_sample(hspace, rng=rng) for _ in range(50)]
    nested = next(s for s in samples if s["optimizer"]["optimizer"] == "sgd")
    assert set(nested) == {"optimizer"}
    assert set(nested["optimizer"]) >= {"optimizer", "lr_schedule"}
    flat = [flatten_sample(s) for s in samples]
    assert {c["decay_epochs"] for c in flat if "decay_epochs" in c} == {1, 2, 3}
    assert all(space.active(c) == c for c in flat)


def test_hyperopt_quantized_and_logint_bounds(tmp_path: Path) -> None:
    space = load(
        tmp_path,
        """
        parameters:
          q: {type: quantized, low: 0.05, high: 0.72, q: 0.1}
          units: {type: logint, low: 1, high: 4}
          lu: {type: loguniform, low: 1.0e-3, high: 1.0e-1}
        """,
    )
    hspace = convert_for(space, "hyperopt").native
    rng = np.random.default_rng(0)
    draws = [hyperopt_sample(hspace, rng=rng) for _ in range(300)]
    assert {round(d["q"], 9) for d in draws} == {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7}
    assert {d["units"] for d in draws} == {1, 2, 3, 4}
    assert all(1e-3 <= d["lu"] <= 1e-1 for d in draws)
    assert math.log10(max(d["lu"] for d in draws)) > -1.5  # log bounds, not raw bounds


def test_ray_hyperopt_search_suggests_nested_configs(tmp_path: Path) -> None:
    space = load(tmp_path, OPTIMISER)
    searcher = HyperOptSearch(
        space=convert_for(space, "hyperopt").native,
        metric="loss",
        mode="min",
        random_state_seed=0,
    )
    searcher = cloudpickle.loads(cloudpickle.dumps(searcher))
    for i in range(10):
        config = space.active(flatten_sample(searcher.suggest(f"t{i}")))
        assert_valid_optimiser_config(config)


def test_flatten_sample_leaves_flat_and_foreign_dicts_alone() -> None:
    flat = {"lr": 0.1, "optimizer": "sgd"}
    assert flatten_sample(flat) == flat
    other = {"layers": {"a": 1}}  # a dict without its own key is not a HyperOpt branch
    assert flatten_sample(other) == other
    nested = {"a": {"a": "x", "b": {"b": 1, "c": 2}}, "d": 3}
    assert flatten_sample(nested) == {"a": "x", "b": 1, "c": 2, "d": 3}


# --- the bundled library ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(LIBRARY.glob("*.yaml")), ids=lambda p: p.name)
def test_every_library_space_converts_for_every_method(path: Path) -> None:
    space = load_search_space(path)
    methods = ["random", "tpe", "gp", "hyperopt"] if not space.has_grid() else ["random"]
    for method in methods:
        converted = convert_for(space, method)
        assert converted.param_space or converted.native
    if path.name == "digits_grid.yaml":
        converted = convert_for(space, "grid")
        assert converted.num_points == 4
        assert flat_domains(space, "grid") == {
            "lr": {"grid_search": [0.003, 0.01]},
            "channels": {"grid_search": [8, 16]},
        }


def test_mnist_conditional_space_contents() -> None:
    space = load_search_space(LIBRARY / "mnist_conditional.yaml")
    assert space.names() == [
        "lr",
        "optimizer",
        "momentum",
        "nesterov",
        "beta1",
        "lr_schedule",
        "lr_step_size",
        "lr_factor",
        "lr_warmup_epochs",
        "batch_size",
        "dropout",
        "channels",
        "aug_translate",
        "aug_noise",
    ]
    p = space.params
    conditions = {n: (s.when.parent, s.when.values) for n, s in p.items() if s.when}
    assert conditions == {
        "momentum": ("optimizer", ("sgd", "rmsprop")),
        "nesterov": ("optimizer", ("sgd",)),
        "beta1": ("optimizer", ("adam", "adamw")),
        "lr_step_size": ("lr_schedule", ("step",)),
        "lr_factor": ("lr_schedule", ("step",)),
        "lr_warmup_epochs": ("lr_schedule", ("cosine",)),
    }
    assert p["lr"] == LogUniformSpec(type="loguniform", low=1e-4, high=3e-2)
    assert p["optimizer"] == CategoricalSpec(
        type="categorical", values=["sgd", "rmsprop", "adam", "adamw"]
    )
    assert p["lr_schedule"] == CategoricalSpec(
        type="categorical", values=["constant", "step", "cosine"]
    )
    step, cosine = Condition(parent="lr_schedule", values=("step",)), p["lr_warmup_epochs"].when
    assert p["lr_step_size"] == IntSpec(type="int", low=2, high=4, when=step)
    assert p["lr_factor"] == UniformSpec(type="uniform", low=0.2, high=0.7, when=step)
    assert p["lr_warmup_epochs"] == IntSpec(type="int", low=0, high=2, when=cosine)
    assert p["batch_size"] == CategoricalSpec(type="categorical", values=[32, 64, 128])
    assert p["dropout"] == UniformSpec(type="uniform", low=0.0, high=0.5)
    assert p["channels"] == IntSpec(type="int", low=8, high=16)
    assert p["aug_translate"] == IntSpec(type="int", low=0, high=2)
    assert p["aug_noise"] == UniformSpec(type="uniform", low=0.0, high=0.15)
    defaults = space.sample_defaults()
    assert "beta1" not in defaults and "lr_step_size" not in defaults
