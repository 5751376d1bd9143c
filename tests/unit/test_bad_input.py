"""Bad input is rejected before any cluster work, with one line naming file, key and fix.

Each case is a real malformed file run through the real CLI (``validate`` and ``sweep``): exit
code 2, no traceback, and nothing written to MLflow or to Tune's storage.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipelines.cli import app
from tests.support.configs import CONFIGS
from trainables.results import first_non_finite

GOOD_SPACE = "parameters:\n  lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}\n"


def _base_config(space: Path) -> dict[str, object]:
    config = yaml.safe_load((CONFIGS / "digits_mlp_random.yaml").read_text())
    config["trainable"]["search_space"] = str(space)
    config["trainable"]["params"]["batch_size"] = 64
    return config


def _write_case(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    """Write the case's files; return (config path, file expected in the message, key/word)."""
    space = tmp_path / "space.yaml"
    space.write_text(GOOD_SPACE)
    config = _base_config(space)
    path = tmp_path / "experiment.yaml"
    expected_file, expected_key = path.name, ""
    if case == "empty file":
        path.write_text("")
        return path, path.name, "empty"
    if case == "invalid yaml":
        path.write_text("name: x\nmetric: [unclosed\n")
        return path, path.name, "line"
    if case == "unknown key":
        config["serach"] = {"method": "tpe"}
        expected_key = "serach"
    elif case == "wrong type":
        config["search"]["num_samples"] = "eight"
        expected_key = "search.num_samples"
    elif case == "low > high":
        space.write_text("parameters:\n  lr: {type: uniform, low: 0.5, high: 0.1}\n")
        expected_file, expected_key = space.name, "parameters.lr"
    elif case == "log bound <= 0":
        space.write_text("parameters:\n  lr: {type: loguniform, low: 0.0, high: 0.1}\n")
        expected_file, expected_key = space.name, "parameters.lr"
    elif case == "empty categorical":
        space.write_text("parameters:\n  optimizer: {type: categorical, values: []}\n")
        expected_file, expected_key = space.name, "parameters.optimizer"
    elif case == "unknown searcher":
        config["search"]["method"] = "bayes-magic"
        expected_key = "search.method"
    elif case == "unknown scheduler":
        config["scheduler"]["name"] = "hyperbolic"
        expected_key = "scheduler"
    elif case == "unknown scheduler option":
        config["scheduler"] = {"name": "asha", "options": {"grace": 2}}
        expected_key = "scheduler.options"
    elif case == "mode not min/max":
        config["mode"] = "maximize"
        expected_key = "mode"
    elif case == "metric never reported":
        config["metric"] = "val_f1"
        expected_key = "metric"
    elif case == "missing data":
        config["data"] = {"dataset": "npz", "path": "no/such/file.npz"}
        expected_key = "data.path"
    elif case == "unknown augmentation":
        config["data"]["augment"] = {"rotation": {"strength": 10}}
        expected_key = "data.augment.rotation"
    elif case == "augmentation strength out of range":
        config["data"]["augment"] = {"rotate": {"strength": 400}}
        expected_key = "data.augment.rotate.strength"
    elif case == "augmentation for another modality":
        config["data"]["augment"] = {"synonym": {"strength": 0.1}}
        expected_key = "data.augment.synonym"
    elif case == "searched augmentation out of range":
        space.write_text(GOOD_SPACE + "  aug_noise: {type: uniform, low: 0.0, high: 5.0}\n")
        expected_key = "trainable.search_space"
    elif case == "csv without label column":
        table = tmp_path / "table.csv"
        table.write_text("a,b,target\n1,2,0\n3,4,1\n")
        config["data"] = {"dataset": "csv", "path": str(table)}
        expected_file, expected_key = "table.csv", "data.label_column"
    elif case == "unknown hyperparameter":
        config["trainable"]["params"]["learning_rate"] = 0.1
        expected_key = "trainable.params.learning_rate"
    elif case == "epochs not an integer":
        config["trainable"]["params"]["epochs"] = "random"
        expected_key = "trainable.params.epochs"
    elif case == "searched epochs not numbers":
        del config["trainable"]["params"]["epochs"]
        config["scheduler"] = {"name": "asha"}
        space.write_text(GOOD_SPACE + "  epochs: {type: categorical, values: [sgd, 3]}\n")
        expected_key = "search_space.epochs"
    elif case == "fp16 without a GPU":
        config["trainable"]["params"]["precision"] = "fp16"
        expected_key = "trainable.params.precision"
    elif case == "augmentation on a GPU without one":
        config["data"]["augment_device"] = "gpu"
        expected_key = "data.augment_device"
    elif case == "data-parallel keras with hypergradient":
        config["trainable"]["framework"] = "tensorflow"
        config["trainable"]["params"]["hyper_lr"] = 0.001
        config["resources"] = {"workers": 2}
        expected_key = "trainable.params.hyper_lr"
    elif case == "node labels not a selector":
        config["resources"] = {"node_labels": {"pool": "in()"}}
        expected_key = "resources.node_labels"
    elif case == "searched precision unknown":
        space.write_text(GOOD_SPACE + "  precision: {type: categorical, values: [fp32, fp64]}\n")
        expected_file, expected_key = space.name, "precision"
    path.write_text(yaml.safe_dump(config))
    return path, expected_file, expected_key


CASES = [
    "empty file",
    "invalid yaml",
    "unknown key",
    "wrong type",
    "low > high",
    "log bound <= 0",
    "empty categorical",
    "unknown searcher",
    "unknown scheduler",
    "unknown scheduler option",
    "mode not min/max",
    "metric never reported",
    "missing data",
    "unknown hyperparameter",
    "unknown augmentation",
    "augmentation strength out of range",
    "augmentation for another modality",
    "searched augmentation out of range",
    "csv without label column",
    "epochs not an integer",
    "searched epochs not numbers",
    "fp16 without a GPU",
    "searched precision unknown",
    "augmentation on a GPU without one",
    "data-parallel keras with hypergradient",
    "node labels not a selector",
]


@pytest.mark.parametrize("command", ["validate", "sweep"])
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line_and_exit_2(
    case: str, command: str, tmp_path: Path, isolated_home: Path
) -> None:
    path, expected_file, expected_word = _write_case(tmp_path, case)
    result = CliRunner().invoke(app, [command, str(path)])

    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0, f"not one line: {message!r}"
    assert message.startswith("error:")
    assert expected_file in message
    assert expected_word in message
    assert "Fix:" in message
    assert "Traceback" not in result.output + result.stderr
    # Rejected before any cluster or tracking work: no MLflow store, no Tune results.
    assert not (isolated_home / "mlflow.db").exists()
    assert not (isolated_home / "ray_results").exists()


def test_set_override_typo_is_rejected_like_a_file_typo(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["validate", str(CONFIGS / "digits_mlp_random.yaml"), "--set", "search.nums=3"]
    )
    assert result.exit_code == 2
    assert "search.nums" in result.stderr
    assert "num_samples" in result.stderr  # the fix lists the valid keys


def test_every_shipped_config_validates_with_one_real_step() -> None:
    for config in sorted(CONFIGS.glob("*.yaml")):
        result = CliRunner().invoke(app, ["validate", str(config)])
        assert result.exit_code == 0, f"{config.name}: {result.output}{result.stderr}"
        assert "one step ran" in result.stdout


# --- files that are not configs at all: binary, not UTF-8, too deep, too big ----------------


def _nested_flow(depth: int) -> str:
    return "name: x\nmetric: " + "[" * depth + "]" * depth + "\n"


def _nested_block(depth: int) -> str:
    return "name: x\n" + "".join(f"{'  ' * level}k{level}:\n" for level in range(depth))


def _alias_bomb() -> str:
    # Nine aliases of ten: 10**9 values once expanded, in 400 bytes of text. The anchors sit
    # where any mapping is allowed; the error for ``name`` would echo (expand) the bomb.
    lines = ["search:", "  options:", "    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return "\n".join([*lines, "name: *a8"]) + "\n"


def _write_unreadable_case(tmp_path: Path, case: str) -> tuple[Path, list[str], str]:
    """Write the case; return (file given to the CLI, extra CLI args, word in the message)."""
    path = tmp_path / "experiment.yaml"
    if case == "binary file":
        path.write_bytes(bytes(range(256)) * 8)
        return path, [], "not UTF-8"
    if case == "Latin-1 text":
        path.write_bytes("name: caf\xe9\nmetric: val_loss\n".encode("latin-1"))
        return path, [], "not UTF-8"
    if case == "control characters":
        path.write_text("name: x\x00y\n")
        return path, [], "invalid YAML"
    if case == "flow nested 10000 deep":
        path.write_text(_nested_flow(10_000))
        return path, [], "nested more than"
    if case == "block nested 300 deep":
        path.write_text(_nested_block(300))
        return path, [], "nested more than"
    if case == "50 MB file":
        path.write_text("k: v\n" * 10_000_000)
        return path, [], "bytes"
    if case == "alias bomb":
        path.write_text(_alias_bomb())
        return path, [], "values"
    if case == "markup and escapes in a key":
        config = _base_config(tmp_path / "space.yaml")
        (tmp_path / "space.yaml").write_text(GOOD_SPACE)
        config["[/x]\x1b[31m\r"] = 1  # rich markup, a terminal escape, a carriage return
        path.write_text(yaml.safe_dump(config))
        return path, [], "unknown key"
    space = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(_base_config(space)))
    if case == "binary search space":
        space.write_bytes(bytes(range(256)) * 8)
        return path, [], "space.yaml"
    if case == "nested search space":
        space.write_text("parameters:\n  lr: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
        return path, [], "space.yaml"
    space.write_text(GOOD_SPACE)  # --set with a nested value
    return path, ["--set", "search.options=" + "[" * 5000 + "]" * 5000], "--set"


UNREADABLE = [
    "binary file",
    "Latin-1 text",
    "control characters",
    "flow nested 10000 deep",
    "block nested 300 deep",
    "50 MB file",
    "alias bomb",
    "markup and escapes in a key",
    "binary search space",
    "nested search space",
    "--set nested 5000 deep",
]


@pytest.mark.parametrize("case", UNREADABLE)
def test_a_file_that_is_no_config_is_one_line_and_exit_2(
    case: str, tmp_path: Path, isolated_home: Path
) -> None:
    path, extra, expected_word = _write_unreadable_case(tmp_path, case)
    result = CliRunner().invoke(app, ["sweep", str(path), *extra])

    assert result.exit_code == 2, (result.exception, result.output)
    message = result.stderr.strip()
    assert message.startswith("error:") and "Fix:" in message
    assert len(message.splitlines()) == 1, f"not one line: {message!r}"
    assert "\x1b" not in message  # a terminal escape is shown escaped, not executed
    assert expected_word in message
    assert len(message) < 1000
    assert not (isolated_home / "mlflow.db").exists()
    assert not (isolated_home / "ray_results").exists()


def _run_cli(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    home, tracking = tmp_path / "home", tmp_path / "tracking" / "mlflow.db"
    env = {
        **os.environ,
        "TUNEPIPE_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tracking}",
    }
    env.pop("RAY_ADDRESS", None)
    tunepipe = Path(sys.executable).with_name("tunepipe")
    return subprocess.run(
        [str(tunepipe), "sweep", str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("case", ["binary file", "flow nested 10000 deep"])
def test_the_installed_cli_rejects_it_in_one_line_and_writes_nothing(
    case: str, tmp_path: Path
) -> None:
    """The real ``tunepipe`` process: exit 2, one line, no traceback, no MLflow, no storage."""
    source = tmp_path / "in"
    source.mkdir()
    path, _, expected_word = _write_unreadable_case(source, case)
    before = sorted(tmp_path.rglob("*"))
    done = _run_cli(path, tmp_path)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected_word in lines[0]
    assert not (tmp_path / "home").exists()  # no Tune storage, no cache, nothing
    assert not (tmp_path / "tracking").exists()
    assert sorted(tmp_path.rglob("*")) == before  # nor anywhere else, the cwd included


# --- a NaN from a trial, whatever its numeric type ------------------------------------------


@given(
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.longdouble]),
    value=st.floats(allow_nan=True, allow_infinity=True, width=16),
    zero_d=st.booleans(),
)
@settings(max_examples=100, deadline=None)
def test_the_nan_guard_catches_every_numpy_float(
    dtype: type[np.floating[Any]], value: float, zero_d: bool
) -> None:
    number = np.array(value, dtype=dtype) if zero_d else dtype(value)
    metrics = {"epoch": 3, "val_accuracy": 0.5, "val_loss": number}
    expected = None if math.isfinite(value) else "val_loss"
    assert first_non_finite(metrics) == expected


def test_the_nan_guard_reads_tensors_and_ignores_what_is_no_number() -> None:
    torch = pytest.importorskip("torch")
    assert first_non_finite({"loss": torch.tensor(float("nan"))}) == "loss"
    assert first_non_finite({"loss": torch.tensor(0.25), "name": "nan", "ok": True}) is None
    assert first_non_finite({"vector": np.array([np.nan, 1.0])}) is None  # not one metric
