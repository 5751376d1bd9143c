"""Unit tests for search_spaces: YAML loading, validation errors and Ray Tune conversion."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError
from ray.tune.search import sample
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.variant_generator import generate_variants

from pipelines.errors import SearchSpaceError
from search_spaces import (
    CategoricalSpec,
    ConstantSpec,
    GridSpec,
    IntSpec,
    LogIntSpec,
    LogUniformSpec,
    QuantizedSpec,
    UniformSpec,
    grid_size,
    load_search_space,
    parse_search_space,
)
from tests.support.spaces import LIBRARY, assert_user_error, flat_domains, space_of, write

# --- each type loads into its spec -------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_spec", "cls", "fields"),
    [
        ("{type: uniform, low: 0.0, high: 0.5}", UniformSpec, {"low": 0.0, "high": 0.5}),
        ("{type: loguniform, low: 1.0e-4, high: 0.1}", LogUniformSpec, {"low": 1e-4, "high": 0.1}),
        ("{type: int, low: 8, high: 32}", IntSpec, {"low": 8, "high": 32}),
        ("{type: logint, low: 16, high: 512}", LogIntSpec, {"low": 16, "high": 512}),
        (
            "{type: quantized, low: 0.0, high: 1.0, q: 0.25}",
            QuantizedSpec,
            {"low": 0.0, "high": 1.0, "q": 0.25},
        ),
        ("{type: categorical, values: [sgd, adam]}", CategoricalSpec, {"values": ["sgd", "adam"]}),
        ("{type: constant, value: 0.0}", ConstantSpec, {"value": 0.0}),
        ("{type: grid, values: [32, 64, true]}", GridSpec, {"values": [32, 64, True]}),
    ],
)
def test_each_type_loads_into_its_spec(
    tmp_path: Path, yaml_spec: str, cls: type, fields: dict[str, object]
) -> None:
    space = space_of(tmp_path, p=yaml_spec)
    spec = space.params["p"]
    assert type(spec) is cls
    for name, expected in fields.items():
        # repr tells 1, 1.0 and True apart, so value types are checked too.
        assert repr(getattr(spec, name)) == repr(expected)


def test_space_keeps_file_order_source_and_grid_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        parameters:
          zeta: {type: constant, value: 1}
          alpha: {type: grid, values: [1, 2]}
          mid: {type: uniform, low: 0, high: 1}
        """,
    )
    space = load_search_space(path)
    assert space.names() == ["zeta", "alpha", "mid"]
    assert list(flat_domains(space, "random")) == ["zeta", "alpha", "mid"]
    assert space.source == str(path)
    assert space.has_grid() is True
    assert space_of(tmp_path, x="{type: categorical, values: [1, 2]}").has_grid() is False


def test_space_is_frozen(tmp_path: Path) -> None:
    space = space_of(tmp_path, x="{type: constant, value: 1}")
    with pytest.raises(ValidationError):
        space.source = "other.yaml"  # type: ignore[misc]


def test_unquoted_exponent_float_is_accepted(tmp_path: Path) -> None:
    # YAML 1.1 reads ``1e-4`` (no dot) as a string; the loader must still treat it as a number.
    spec = space_of(tmp_path, lr="{type: loguniform, low: 1e-4, high: 1e-1}").params["lr"]
    assert isinstance(spec, LogUniformSpec)
    assert (spec.low, spec.high) == (1e-4, 1e-1)


def test_parse_search_space_accepts_a_loaded_mapping() -> None:
    data = {"parameters": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}}
    space = parse_search_space(data, source="inline")
    assert space.source == "inline"
    assert space.params["lr"] == UniformSpec(type="uniform", low=0.1, high=0.2)


# --- conversion to Ray Tune domains ---------------------------------------------------------


def test_float_domains_have_the_right_sampler_and_bounds(tmp_path: Path) -> None:
    space = space_of(
        tmp_path,
        u="{type: uniform, low: 0.1, high: 0.9}",
        lu="{type: loguniform, low: 1.0e-5, high: 1.0e-2}",
        q="{type: quantized, low: 0.0, high: 1.0, q: 0.25}",
    )
    d = flat_domains(space, "tpe")
    assert isinstance(d["u"], sample.Float)
    assert isinstance(d["u"].get_sampler(), sample.Float._Uniform)
    assert (d["u"].lower, d["u"].upper) == (0.1, 0.9)
    assert isinstance(d["lu"].get_sampler(), sample.Float._LogUniform)
    assert (d["lu"].lower, d["lu"].upper) == (1e-5, 1e-2)
    assert isinstance(d["q"].get_sampler(), sample.Quantized)
    assert d["q"].get_sampler().q == 0.25
    assert set(d["q"].sample(size=500)) <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_int_domain_upper_bound_is_made_exclusive_for_ray(tmp_path: Path) -> None:
    d = flat_domains(space_of(tmp_path, n="{type: int, low: 0, high: 2}"), "random")["n"]
    assert isinstance(d, sample.Integer)
    assert (d.lower, d.upper) == (0, 3)  # Ray's upper is exclusive: the converter adds 1
    draws = d.sample(size=2000)
    assert min(draws) == 0
    assert max(draws) == 2  # both inclusive bounds are hit, high is never exceeded
    assert set(draws) == {0, 1, 2}


def test_logint_domain_samples_the_inclusive_range(tmp_path: Path) -> None:
    d = flat_domains(space_of(tmp_path, n="{type: logint, low: 1, high: 4}"), "random")["n"]
    assert isinstance(d, sample.Integer)
    assert isinstance(d.get_sampler(), sample.Integer._LogUniform)
    assert (d.lower, d.upper) == (1, 5)
    assert set(d.sample(size=2000)) == {1, 2, 3, 4}


def test_categorical_constant_and_grid_domains(tmp_path: Path) -> None:
    space = space_of(
        tmp_path,
        opt="{type: categorical, values: [sgd, adam]}",
        flip="{type: constant, value: 0.0}",
        bs="{type: grid, values: [32, 64]}",
    )
    d = flat_domains(space, "random")
    assert isinstance(d["opt"], sample.Categorical)
    assert d["opt"].categories == ["sgd", "adam"]
    assert d["flip"] == 0.0
    assert d["bs"] == {"grid_search": [32, 64]}


def test_optuna_sees_inclusive_int_bounds(tmp_path: Path) -> None:
    # End to end through Ray's own TPE conversion: our inclusive high must survive the +1.
    space = space_of(
        tmp_path,
        units="{type: logint, low: 32, high: 256}",
        layers="{type: int, low: 1, high: 3}",
    )
    dists = OptunaSearch.convert_search_space(flat_domains(space, "tpe"))
    assert (dists["units"].low, dists["units"].high, dists["units"].log) == (32, 256, True)
    assert (dists["layers"].low, dists["layers"].high) == (1, 3)


# --- grid search ------------------------------------------------------------------------------


def test_grid_method_expands_discrete_params(tmp_path: Path) -> None:
    space = space_of(
        tmp_path,
        opt="{type: categorical, values: [sgd, adam]}",
        shift="{type: int, low: 0, high: 2}",
        bs="{type: grid, values: [32, 64]}",
        flip="{type: constant, value: 0.0}",
    )
    d = flat_domains(space, "grid")
    assert d == {
        "opt": {"grid_search": ["sgd", "adam"]},
        "shift": {"grid_search": [0, 1, 2]},
        "bs": {"grid_search": [32, 64]},
        "flip": 0.0,
    }
    assert grid_size(space) == 12
    configs = [config for _, config in generate_variants(d)]
    assert len(configs) == 12
    assert {(c["opt"], c["shift"], c["bs"]) for c in configs} == {
        (o, s, b) for o in ("sgd", "adam") for s in (0, 1, 2) for b in (32, 64)
    }


def test_grid_int_range_limit(tmp_path: Path) -> None:
    assert grid_size(space_of(tmp_path, n="{type: int, low: 1, high: 32}")) == 32
    space = space_of(tmp_path, n="{type: int, low: 1, high: 33}")
    with pytest.raises(SearchSpaceError) as info:
        flat_domains(space, "grid")
    assert "33 values" in assert_user_error(info.value, space.source, "parameters.n")


@pytest.mark.parametrize(
    "yaml_spec",
    [
        "{type: uniform, low: 0.0, high: 1.0}",
        "{type: loguniform, low: 1.0e-3, high: 1.0}",
        "{type: logint, low: 1, high: 4}",
        "{type: quantized, low: 0.0, high: 1.0, q: 0.5}",
    ],
)
def test_grid_method_rejects_continuous_params(tmp_path: Path, yaml_spec: str) -> None:
    space = space_of(tmp_path, ok="{type: grid, values: [1]}", lr=yaml_spec)
    with pytest.raises(SearchSpaceError) as info:
        grid_size(space)
    message = assert_user_error(info.value, space.source, "parameters.lr")
    assert "cannot be grid-searched" in message
    assert "type: grid/categorical" in info.value.fix


def test_model_based_searcher_rejects_grid_params(tmp_path: Path) -> None:
    space = space_of(tmp_path, bs="{type: grid, values: [32, 64]}")
    with pytest.raises(SearchSpaceError) as info:
        flat_domains(space, "tpe")
    message = assert_user_error(info.value, space.source, "parameters.bs")
    assert "'tpe'" in message
    assert "type: categorical" in info.value.fix
    assert flat_domains(space, "random") == {"bs": {"grid_search": [32, 64]}}


# --- user mistakes give one clear line --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("", "parameters", "file is empty"),
        ("parameters:\n  lr: {type: uniform, low: [\n", "line 3", "invalid YAML"),
        ("parameters:\n\tlr: 1\n", "line 2", "invalid YAML"),
        ("- lr\n- momentum\n", None, "top level must be a mapping, got ['lr', 'momentum']"),
        ("{}\n", "parameters", "missing required key 'parameters'"),
        ("parameters: []\n", "parameters", "must be a non-empty mapping"),
        (
            "parameters: {x: {type: constant, value: 1}}\nparam: 3\n",
            "param",
            "unknown top-level key 'param'",
        ),
        (
            "parameters:\n  lr: {type: uniform, lo: 0.1, high: 0.2}\n",
            "parameters.lr.lo",
            "unknown key 'lo' (did you mean 'low'?)",
        ),
        (
            "parameters:\n  lr: {type: unifrom, low: 0.1, high: 0.2}\n",
            "parameters.lr.type",
            "unknown type 'unifrom'",
        ),
        ("parameters:\n  lr: {low: 0.1, high: 0.2}\n", "parameters.lr.type", "missing key 'type'"),
        (
            "parameters:\n  lr: {type: uniform, low: abc, high: 0.2}\n",
            "parameters.lr.low",
            "expected a number, got 'abc'",
        ),
        (
            "parameters:\n  n: {type: int, low: 1.5, high: 4}\n",
            "parameters.n.low",
            "valid integer, got 1.5",
        ),
        (
            "parameters:\n  lr: {type: uniform, low: 0.1, high: 0.01}\n",
            "parameters.lr.low",
            "low must be < high, got low=0.1, high=0.01",
        ),
        (
            "parameters:\n  n: {type: int, low: 5, high: 4}\n",
            "parameters.n.low",
            "low must be <= high, got low=5, high=4",
        ),
        (
            "parameters:\n  lr: {type: loguniform, low: 0.0, high: 0.1}\n",
            "parameters.lr.low",
            "low must be > 0 on a log scale, got low=0.0",
        ),
        (
            "parameters:\n  n: {type: logint, low: 0, high: 8}\n",
            "parameters.n.low",
            "low must be >= 1 on a log scale, got low=0",
        ),
        (
            "parameters:\n  x: {type: quantized, low: 0.0, high: 1.0, q: 0}\n",
            "parameters.x.q",
            "q must be > 0",
        ),
        (
            "parameters:\n  opt: {type: categorical, values: []}\n",
            "parameters.opt.values",
            "values is empty",
        ),
        (
            "parameters:\n  bs: {type: grid, values: []}\n",
            "parameters.bs.values",
            "values is empty",
        ),
        (
            "parameters:\n  bs: {type: grid, values: [32, null]}\n",
            "parameters.bs.values.1",
            "got None",
        ),
        (
            "parameters:\n  bs: {type: grid, values: [32, 32]}\n",
            "parameters.bs.values",
            "duplicates: 32",
        ),
        (
            "parameters:\n  1st: {type: constant, value: 1}\n",
            "parameters.1st",
            "not an identifier",
        ),
        ("parameters:\n  lr: 0.1\n", "parameters.lr", "expected a mapping with a 'type' key"),
        (
            "parameters:\n  lr: {type: constant, value: 1}\n  lr: {type: constant, value: 2}\n",
            "line 3",
            "duplicate key 'lr'",
        ),
    ],
)
def test_bad_input_gives_one_line_error(
    tmp_path: Path, text: str, key: str | None, expected: str
) -> None:
    path = write(tmp_path, text, name="bad_space.yaml")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert expected in assert_user_error(info.value, path, key)


def test_unknown_key_fix_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "parameters:\n  lr: {type: uniform, lo: 0.1, high: 0.2}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert "type, low, high" in info.value.fix


def test_unknown_type_fix_lists_all_eight_types(tmp_path: Path) -> None:
    path = write(tmp_path, "parameters:\n  lr: {type: normal, low: 0.1, high: 0.2}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert info.value.fix == (
        "use one of: uniform, loguniform, int, logint, quantized, categorical, constant, grid"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert "file not found" in assert_user_error(info.value, path, None)


# --- defaults for dry runs --------------------------------------------------------------------


def test_sample_defaults(tmp_path: Path) -> None:
    space = space_of(
        tmp_path,
        u="{type: uniform, low: 0.0, high: 0.5}",
        lu="{type: loguniform, low: 1.0e-4, high: 1.0e-2}",
        n="{type: int, low: 1, high: 4}",
        ln="{type: logint, low: 16, high: 64}",
        q="{type: quantized, low: 0.0, high: 1.0, q: 0.25}",
        c="{type: categorical, values: [adam, sgd]}",
        k="{type: constant, value: 7}",
        g="{type: grid, values: [64, 32]}",
    )
    d = space.sample_defaults()
    assert d["u"] == 0.25
    assert math.isclose(d["lu"], 1e-3)
    assert d["n"] in (2, 3)
    assert d["ln"] == 32
    assert d["q"] == 0.5
    assert (d["c"], d["k"], d["g"]) == ("adam", 7, 64)


def test_quantized_default_is_an_in_bounds_multiple_of_q(tmp_path: Path) -> None:
    spec = space_of(tmp_path, x="{type: quantized, low: 0.05, high: 0.32, q: 0.1}").params["x"]
    assert isinstance(spec, QuantizedSpec)
    value = spec.default()
    assert math.isclose(value, 0.2)
    assert 0.05 <= value <= 0.32


def test_quantized_needs_a_multiple_of_q_inside_the_bounds(tmp_path: Path) -> None:
    path = write(tmp_path, "parameters:\n  x: {type: quantized, low: 0.05, high: 0.07, q: 0.1}\n")
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert "no multiple of q=0.1" in assert_user_error(info.value, path, "parameters.x.q")


# --- the bundled library ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist_cnn.yaml", "mlp.yaml"])
@pytest.mark.parametrize("method", ["tpe", "random"])
def test_library_spaces_load_and_convert(name: str, method: str) -> None:
    space = load_search_space(LIBRARY / name)
    domains = flat_domains(space, method)
    assert list(domains) == space.names()
    assert not space.has_grid()
    assert isinstance(domains["lr"].get_sampler(), sample.Float._LogUniform)
    assert domains["optimizer"].categories == ["sgd", "adam"]
    # Every default is a value the searcher could propose for that parameter.
    for pname, value in space.sample_defaults().items():
        spec = space.params[pname]
        if isinstance(spec, CategoricalSpec | GridSpec):
            assert value in spec.values
        elif isinstance(spec, ConstantSpec):
            assert value == spec.value
        else:
            assert spec.low <= value <= spec.high, pname


def test_mnist_cnn_space_contents() -> None:
    space = load_search_space(LIBRARY / "mnist_cnn.yaml")
    assert space.names() == [
        "lr",
        "optimizer",
        "momentum",
        "batch_size",
        "dropout",
        "channels",
        "weight_decay",
        "aug_translate",
        "aug_noise",
        "aug_hflip",
    ]
    assert space.params["channels"] == IntSpec(type="int", low=8, high=16)
    assert space.params["aug_hflip"] == ConstantSpec(type="constant", value=0.0)
    assert flat_domains(space, "tpe")["channels"].upper == 17  # inclusive 16, exclusive for Ray


def test_mlp_space_is_a_sensible_mlp_space() -> None:
    space = load_search_space(LIBRARY / "mlp.yaml")
    assert set(space.names()) == {
        "lr",
        "optimizer",
        "momentum",
        "batch_size",
        "dropout",
        "hidden_units",
        "hidden_layers",
        "weight_decay",
    }
    p = space.params
    assert isinstance(p["lr"], LogUniformSpec)
    assert 1e-5 <= p["lr"].low < p["lr"].high <= 1.0
    assert isinstance(p["optimizer"], CategoricalSpec)
    assert p["optimizer"].values == ["sgd", "adam"]
    assert isinstance(p["momentum"], UniformSpec)
    assert 0.0 <= p["momentum"].low < p["momentum"].high < 1.0
    assert isinstance(p["batch_size"], CategoricalSpec)
    assert all(isinstance(v, int) and v > 0 for v in p["batch_size"].values)
    assert isinstance(p["dropout"], UniformSpec)
    assert 0.0 <= p["dropout"].low < p["dropout"].high < 1.0
    assert isinstance(p["hidden_units"], IntSpec | LogIntSpec)
    assert (p["hidden_units"].low, p["hidden_units"].high) == (32, 256)
    assert p["hidden_layers"] == IntSpec(type="int", low=1, high=3)
    assert isinstance(p["weight_decay"], LogUniformSpec)
    units = flat_domains(space, "random")["hidden_units"]
    assert isinstance(units, sample.Integer)
    assert (units.lower, units.upper) == (32, 257)
