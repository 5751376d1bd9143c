"""The user's own trainable named by ``trainable.target``: how it resolves, and every way it can
be wrong, as one-line errors with exit code 2 before any cluster work (no Ray here)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import load_config
from pipelines.errors import ConfigError, SearchSpaceError, UserInputError
from pipelines.sweep.inputs import sweep_config
from pipelines.sweep.plan import plan_sweep
from tests.support.configs import REPO
from tests.support.user_trainables import EXAMPLES, NearestCentroid
from trainables.targets import ENTRY_POINT_GROUP, resolve_target

TORCH_EXAMPLE = EXAMPLES / "torch_cnn" / "experiment.yaml"


def _project(tmp_path: Path, code: str, **trainable: Any) -> Path:
    """A user project: a module beside an experiment config that targets it.

    Every project's module has a name of its own: Python imports a module name once per process.
    """
    module = f"userlib_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(code))
    target = str(trainable.get("target", ""))
    if target.startswith("userlib"):
        trainable["target"] = target.replace("userlib", module, 1)
    (tmp_path / "space.yaml").write_text("parameters:\n  lr: {type: constant, value: 0.01}\n")
    section = {"search_space": "space.yaml", "params": {"epochs": 1, "batch_size": 32}}
    section.update(trainable)
    lines = "\n".join(f"  {key}: {value!r}" for key, value in section.items())
    config = tmp_path / "experiment.yaml"
    config.write_text(
        "name: user\nmetric: val_accuracy\nmode: max\ndata: {dataset: digits}\n"
        f"trainable:\n{lines}\n"
    )
    return config


def _validate(config: Path, *extra: str) -> Any:
    return CliRunner().invoke(app, ["validate", str(config), *extra])


@pytest.mark.parametrize(
    ("code", "trainable", "message"),
    [
        ("", {"target": "nowhere:build", "framework": "torch"}, "cannot import module 'nowhere'"),
        ("", {"target": "userlib:build", "framework": "torch"}, "has no attribute 'build'"),
        ("import nonexistent_dependency\n", {"target": "userlib:build"}, "ModuleNotFoundError"),
        ("def build(hp):\n    pass\n", {"target": "userlib:build", "framework": "torch"},
         "cannot be called as build(hp, spec)"),
        ("class T:\n    def setup(self): pass\n", {"target": "userlib:T"},
         "lacks train_epoch, evaluate, save, load"),
        ("VALUE = 3\n", {"target": "userlib:VALUE"}, "not a function or a class"),
        ("", {"target": "not_registered_anywhere"}, ENTRY_POINT_GROUP),
        ("def build(hp, spec):\n    return 'a string'\n",
         {"target": "userlib:build", "framework": "torch"}, "returned a str, not a torch.nn"),
        ("def build(hp, spec):\n    raise RuntimeError('boom')\n",
         {"target": "userlib:build", "framework": "torch"}, "raised RuntimeError: boom"),
        ("def train(hp, ctx):\n    ctx.report({'val_loss': 1.0})\n",
         {"target": "userlib:train"}, "did not report 'val_accuracy'"),
        ("def train(hp, ctx):\n    return None\n",
         {"target": "userlib:train"}, "returned without reporting"),
    ],
)  # fmt: skip
def test_a_broken_target_is_one_line_exit_2(
    tmp_path: Path, code: str, trainable: dict[str, Any], message: str
) -> None:
    result = _validate(_project(tmp_path, code, **trainable))
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "trainable" in result.output and "Fix:" in result.output
    assert "Traceback" not in result.output


def test_bundled_model_and_target_together_are_refused(tmp_path: Path) -> None:
    config = _project(tmp_path, "", target="userlib:build", model="mlp", framework="torch")
    with pytest.raises(ConfigError, match="keep one of the two"):
        plan_sweep(load_config(config))


def test_a_bundled_model_is_still_required_without_a_target() -> None:
    config = load_config(REPO / "pipelines/configs/mnist_cnn.yaml", {"trainable.model": None})
    with pytest.raises(ConfigError, match=r"trainable\.model: required key is missing"):
        plan_sweep(config)


def test_the_module_resolves_beside_the_config_and_any_hyperparameter_is_accepted() -> None:
    plan = plan_sweep(load_config(TORCH_EXAMPLE))  # filters, dropout: the builder's own keys
    assert plan.info.builder == "cnn:build" and plan.info.user_code
    assert plan.info.search_path == str(TORCH_EXAMPLE.parent)
    assert "model" not in plan.param_space  # no bundled model
    assert plan.extra_metrics is not None
    assert plan.extra_metrics.names == ("val_balanced_accuracy", "val_f1_macro")


def test_an_installed_package_registers_a_name_in_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real distribution's metadata on sys.path, as pip installs it: no mock of the lookup."""
    site = tmp_path / "site"
    (site / "acme_models").mkdir(parents=True)
    (site / "acme_models" / "__init__.py").write_text(
        "def build(hp, spec):\n    raise NotImplementedError\n"
    )
    dist = site / "acme_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nacme-cnn = acme_models:build\n"
    )
    monkeypatch.syspath_prepend(str(site))
    info = resolve_target("acme-cnn", "torch")
    assert info.builder == "acme_models:build" and info.search_path is None


def test_a_class_declares_its_metrics_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    info = resolve_target(NearestCentroid, None)
    assert info.metrics["classification"] == NearestCentroid.metrics
    config = _project(tmp_path, "", target="userlib:C")
    with pytest.raises(UserInputError, match="never reports 'val_nope'"):
        plan_sweep(load_config(config, {"metric": "val_nope"}), NearestCentroid)


def test_library_and_function_metrics_are_checked_before_the_sweep() -> None:
    config = load_config(TORCH_EXAMPLE, {"trainable.metrics": ["val_r2"]})
    with pytest.raises(ConfigError, match="unknown metric 'val_r2' for classification"):
        plan_sweep(config)
    own = load_config(TORCH_EXAMPLE, {"metric": "tests.support.metrics:kappa"})
    assert own.metric == "val_kappa"
    assert "tests.support.metrics:kappa" in own.trainable.metrics


@pytest.mark.slow  # loads torch, TensorFlow and scikit-learn models for one step each
def test_validate_runs_one_real_step_of_each_example() -> None:
    for name in ("torch_cnn", "keras_model", "sklearn_function"):
        result = _validate(EXAMPLES / name / "experiment.yaml")
        assert result.exit_code == 0, result.output
        assert "one step ran" in result.output


def test_sweep_refuses_a_broken_builder_before_ray_or_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.sweep import run

    reached: list[Any] = []
    real_session = run.ray_session

    def watched(*args: Any, **kwargs: Any) -> Any:  # observes; the real session still runs
        reached.append(args)
        return real_session(*args, **kwargs)

    monkeypatch.setattr(run, "ray_session", watched)
    code = "def build(hp, spec):\n    return [1, 2, 3]\n"
    config = _project(tmp_path, code, target="userlib:build", framework="torch")
    result = CliRunner().invoke(app, ["sweep", str(config)])
    assert result.exit_code == 2, result.output
    assert "returned a list, not a torch.nn.Module" in result.output
    assert reached == []  # refused before any Ray session (a test session may have Ray up)
    home = Path(os.environ["TUNEPIPE_HOME"])
    assert not (home / "mlflow.db").exists()  # nothing recorded for a rejected sweep
    assert not (home / "ray_results").exists()  # no Tune experiment either


def test_python_objects_become_the_files_a_config_names(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    y = np.arange(60) % 3
    raw = {
        "name": "arrays",
        "metric": "val_accuracy",
        "mode": "max",
        "trainable": {"framework": "torch", "model": "mlp", "params": {"epochs": 1}},
    }
    space = {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}}
    config = sweep_config(raw, search_space=space, data=(x, y))
    assert config.data.dataset == "npz" and config.data.path is not None
    with np.load(config.data.path, allow_pickle=False) as saved:
        np.testing.assert_array_equal(saved["x"], x)
    again = sweep_config(raw, search_space=space, data={"x": x, "y": y})
    assert again.data.path == config.data.path  # named by content: the same file
    assert config.trainable.search_space.read_text().startswith("parameters:")
    with pytest.raises(SearchSpaceError, match="search_space"):
        sweep_config(raw, search_space={"lr": {"type": "nope"}}, data=(x, y))
    with pytest.raises(ConfigError, match="60 rows of x but 59 of y"):
        sweep_config(raw, search_space=space, data=(x, y[:59]))
