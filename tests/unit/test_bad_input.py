"""Bad input is rejected before any cluster work, with one line naming file, key and fix.

Each case is a real malformed file run through the real CLI (``validate`` and ``sweep``): exit
code 2, no traceback, and nothing written to MLflow or to Tune's storage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from tests.support.configs import CONFIGS

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
