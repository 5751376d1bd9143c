"""Property-based fuzzing of experiment configs and search spaces through the real CLI.

The property: whatever a user writes, ``tunepipe validate`` exits 0 or 2 (never a traceback,
never another code), a rejection is one line starting ``error:``, and nothing is written to
MLflow or Tune's storage (only the data cache may appear under ``TUNEPIPE_HOME``).

Each example runs the real ``validate`` command in-process (``CliRunner``), with one change:
the one real training step (``dry_step``) is replaced by a stub reporting the metric, so an
accepted config costs milliseconds instead of seconds. Everything before it runs for real:
reading and bounding the YAML, the schema, overrides, planning (trainable, search space and its
conversion for the searcher, strategies, storage), and loading and preprocessing the data.

Figures (``pytest -s`` prints them; three runs, the draws are random): 600 cases a run.
200 mutated experiment configs: 19-41 accepted (exit 0), 159-181 rejected cleanly (exit 2);
200 raw documents (random bytes, text, YAML nested 40-3,000 deep, random YAML values): all
200 rejected cleanly; 200 fuzzed search spaces with a random searcher and scheduler: 48-53
accepted, 147-152 rejected cleanly. Tracebacks: 0; files written besides the data cache: 0.
Before the fixes of issue 17 the raw documents failed at once (a UnicodeDecodeError or
RecursionError traceback), and ``epochs: random`` crashed planning with a ValueError.
"""

from __future__ import annotations

import functools
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipelines.cli import app
from search_spaces import PARAM_TYPES
from tests.support.configs import CONFIGS

FUZZ = settings(
    max_examples=200,
    deadline=None,
    # The autouse isolated_home fixture is shared by every example on purpose: the property
    # "nothing written" is checked against it after each one.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # failures print their example; nothing is saved into the repository
)
_command = functools.cache(typer.main.get_command)
BASE = yaml.safe_load((CONFIGS / "digits_mlp_random.yaml").read_text())
NAMES = [
    *("random", "grid", "tpe", "gp", "hyperopt", "fifo", "asha", "hyperband", "median", "pbt"),
    *("torch", "sklearn", "mlp", "cnn", "digits", "diabetes", "npz", "csv", "mnist5k"),
    *("val_loss", "val_accuracy", "min", "max", "rotate", "noise", "bohb-like", "sgd", "adam"),
]
KEYS = [
    "name", "metric", "mode", "data", "data.dataset", "data.path", "data.modality",
    "data.task", "data.label_column", "data.feature_columns", "data.image_size",
    "data.val_fraction", "data.holdout_fraction", "data.seed", "data.cache", "data.augment",
    "data.augment.rotate", "data.augment.noise.strength", "trainable", "trainable.framework",
    "trainable.model", "trainable.target", "trainable.search_space", "trainable.params",
    "trainable.params.epochs", "trainable.params.batch_size", "trainable.params.lr",
    "trainable.metrics", "search", "search.method", "search.preset", "search.num_samples",
    "search.max_concurrent", "search.seed", "search.time_budget_s", "search.options",
    "search.options.n_initial_points", "scheduler", "scheduler.name", "scheduler.options",
    "scheduler.options.grace_period", "scheduler.options.max_t", "resources.cpu",
    "resources.gpu", "fault_tolerance.max_failures", "fault_tolerance.checkpoint_every",
    "retrain.top_k", "runtime.pip", "storage.path", "storage.endpoint", "tracking.uri",
    "tracking.experiment", "tracking.register_model",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(NAMES),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
keys = st.sampled_from(KEYS) | st.text(min_size=1, max_size=12)
#: Values of a type a key may take: most edits are near misses, which reach the deeper checks.
plausible = st.one_of(
    st.integers(min_value=-2, max_value=12),
    st.floats(min_value=-0.5, max_value=1.5),
    st.sampled_from(NAMES),
    st.booleans(),
)
edits = st.lists(
    st.tuples(st.just(False), st.sampled_from(KEYS), plausible)
    | st.tuples(st.booleans(), keys, values),
    min_size=1,
    max_size=3,
)


def _set(config: dict[str, Any], dotted: str, value: Any, *, delete: bool) -> None:
    node: Any = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        return
    if delete:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


class Outcomes:
    """Counts each test's exit codes, printed at the end (``pytest -s`` shows them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.codes: Counter[int] = Counter()
        self.keys: Counter[str] = Counter()  # the key each rejection named

    def count(self, code: int, message: str) -> None:
        self.codes[code] += 1
        if code == 2:
            parts = message.split(": ")
            self.keys[parts[2] if len(parts) > 3 else "(no key)"] += 1

    def report(self) -> None:
        total = sum(self.codes.values())
        print(f"\n{self.name}: {total} cases, exit 0: {self.codes[0]}, exit 2: {self.codes[2]}")
        print("  most rejected keys:", self.keys.most_common(6))


@contextmanager
def _no_training_step() -> Iterator[None]:
    """Replace only the one real training step; every check before it runs for real."""

    def step(plan: Any, prepared: Any) -> dict[str, float]:
        return {plan.config.metric: 0.5}

    # typer rebuilds the click command from the app on every invoke, which costs more than a
    # rejected example; the same command is built once and reused.
    with (
        mock.patch("pipelines.sweep.dry_run.dry_step", step),
        mock.patch("typer.testing._get_command", _command),
    ):
        yield


def _written(root: Path) -> list[Path]:
    """Return every file under ``root`` except the data cache (which validate may fill)."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and "cache" not in path.relative_to(root).parts
    ]


def _validate(text: str | bytes, home: Path, outcomes: Outcomes, space: str = "") -> int:
    """Run ``tunepipe validate`` on ``text``; check the property; return the exit code."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        if space:
            (Path(folder) / "space.yaml").write_text(space, encoding="utf-8")
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        with _no_training_step():
            result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), (result.exception, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        message = result.stderr.strip()
        assert message.startswith("error:") and "\n" not in message, message
    # Nothing reached MLflow or Tune's storage, in TUNEPIPE_HOME or in the working directory.
    assert _written(home.parent) == []
    outcomes.count(result.exit_code, result.stderr.strip())
    return result.exit_code


@pytest.fixture(scope="module")
def config_outcomes() -> Iterator[Outcomes]:
    outcomes = Outcomes("mutated experiment configs")
    yield outcomes
    outcomes.report()


@FUZZ
@given(changes=edits)
def test_mutated_experiment_configs_exit_0_or_2(
    changes: list[tuple[bool, str, Any]], isolated_home: Path, config_outcomes: Outcomes
) -> None:
    config = yaml.safe_load(_dump(BASE))
    config["trainable"]["search_space"] = "mlp"  # the bundled space, found by name
    for delete, key, value in changes:
        _set(config, key, value, delete=delete)
    _validate(_dump(config), isolated_home, config_outcomes)


@pytest.fixture(scope="module")
def document_outcomes() -> Iterator[Outcomes]:
    outcomes = Outcomes("raw documents")
    yield outcomes
    outcomes.report()


nested = st.integers(min_value=40, max_value=3000).map(lambda n: "a: " + "[" * n + "]" * n)
documents = st.one_of(st.binary(max_size=300), st.text(max_size=200), nested, values.map(_dump))


@FUZZ
@given(document=documents)
def test_raw_documents_exit_0_or_2(
    document: str | bytes, isolated_home: Path, document_outcomes: Outcomes
) -> None:
    assert _validate(document, isolated_home, document_outcomes) == 2  # no document is a config


HPARAMS = ["lr", "optimizer", "momentum", "batch_size", "dropout", "hidden_units", "epochs"]
numbers = st.one_of(
    st.integers(min_value=-3, max_value=300),
    st.floats(min_value=-10, max_value=10),
    st.sampled_from([0, 1, 1e-4, 0.1, 256, float("nan"), float("inf"), -float("inf"), 2**70]),
)
small = st.one_of(numbers, st.sampled_from(NAMES), st.booleans(), st.none(), st.text(max_size=6))
when = st.dictionaries(st.sampled_from(HPARAMS), small | st.lists(small, max_size=3), max_size=2)
extra = st.dictionaries(st.sampled_from(["base", "step", "lo", "values"]), values, max_size=1)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Draw from ``good`` about seven times in eight, ``bad`` otherwise.

    A space of several parameters then often has no flaw, or one, and reaches the checks after
    the first (its conversion for the searcher). ``one_of(good, ..., bad)`` does not weigh its
    branches, and Hypothesis favours the ends of a range, hence the flaw in the middle.
    """
    return st.integers(min_value=0, max_value=7).flatmap(lambda i: bad if i == 3 else good)


def _pair(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    ordered = st.lists(strategy, min_size=2, max_size=2, unique=True).map(sorted)
    return ordered.map(lambda pair: {"low": pair[0], "high": pair[1]})


#: Fields that break no rule of their type (they may still not suit the hyperparameter).
SOUND: dict[Any, st.SearchStrategy[dict[str, Any]]] = {
    "uniform": _pair(st.floats(min_value=0, max_value=1)),
    "loguniform": _pair(st.floats(min_value=1e-6, max_value=1)),
    "int": _pair(st.integers(min_value=1, max_value=300)),
    "logint": _pair(st.integers(min_value=1, max_value=300)),
    "quantized": st.fixed_dictionaries(
        {"low": st.just(0.0), "high": st.just(0.5), "q": st.just(0.1)}
    ),
    "categorical": st.fixed_dictionaries(
        {
            "values": st.lists(
                st.sampled_from([16, 64, 0.1, "sgd", "adam"]), min_size=1, unique=True
            )
        }
    ),
    "constant": st.fixed_dictionaries({"value": st.sampled_from([1, 0.01, "adam", True])}),
}
SOUND["grid"] = SOUND["categorical"]


def _fuzzed_fields(kind: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Fields of ``kind`` with any values: missing, ill-typed, NaN, out of order."""
    fields: dict[str, st.SearchStrategy[Any]]
    if kind in ("categorical", "grid"):
        fields = {"values": st.lists(small, max_size=5) | values}
    elif kind == "constant":
        fields = {"value": small | values}
    else:
        fields = {"low": numbers | small, "high": numbers | small}
        if kind == "quantized":
            fields["q"] = numbers | small
    return st.fixed_dictionaries(fields)


def _spec(kind: Any) -> st.SearchStrategy[dict[str, Any]]:
    """A spec of ``kind``: sound or fuzzed fields, maybe a ``when``, maybe an unknown key."""
    fields = _fuzzed_fields(kind)
    if kind in SOUND:
        fields = _mostly(SOUND[kind], fields)
    conditions = st.dictionaries(st.just("when"), when, max_size=1)
    parts = st.tuples(fields, _mostly(st.just({}), conditions), _mostly(st.just({}), extra))
    return parts.map(lambda p: {"type": kind, **p[0], **p[1], **p[2]})


specs = _mostly(st.sampled_from(list(PARAM_TYPES)), st.sampled_from(["choice", 7, None])).flatmap(
    _spec
)
spaces = st.dictionaries(
    _mostly(st.sampled_from(HPARAMS[:-1]), st.sampled_from(HPARAMS) | st.text(max_size=8)),
    _mostly(specs, values),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def space_outcomes() -> Iterator[Outcomes]:
    outcomes = Outcomes("fuzzed search spaces")
    yield outcomes
    outcomes.report()


@FUZZ
@given(
    params=spaces,
    method=st.sampled_from(["random", "grid", "tpe", "gp", "hyperopt"]),
    scheduler=st.sampled_from(["fifo", "asha", "median", "pbt"]),
)
def test_fuzzed_search_spaces_exit_0_or_2(
    params: dict[Any, Any],
    method: str,
    scheduler: str,
    isolated_home: Path,
    space_outcomes: Outcomes,
) -> None:
    config = yaml.safe_load(_dump(BASE))
    config["trainable"]["search_space"] = "space.yaml"
    config["search"]["method"] = method
    config["scheduler"]["name"] = scheduler
    if "batch_size" not in params:  # required by the model: fixed unless the space searches it
        config["trainable"]["params"]["batch_size"] = 64
    space = _dump({"parameters": params})
    _validate(_dump(config), isolated_home, space_outcomes, space=space)
