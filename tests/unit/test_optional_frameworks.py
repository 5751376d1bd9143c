"""The core imports and plans a sweep without torch or TensorFlow installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.configs import REPO

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = {"torch", "tensorflow", "keras"}

    class Blocker:
        # Behaves as if the frameworks were not installed at all.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import pipelines, search_spaces, trainables
    import pipelines.cli, pipelines.sweep.run, pipelines.tracking, trainables.adapter
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    from pipelines.sweep.plan import plan_sweep

    plan = plan_sweep(load_config("pipelines/configs/digits_random_forest.yaml"))
    assert plan.max_epochs > 0
    # A sweep on a framework that is not installed is refused before any trial starts.
    for framework, extra in [("torch", "torch"), ("tensorflow", "tensorflow")]:
        config = load_config(
            "pipelines/configs/mnist_cnn.yaml", {"trainable.framework": framework}
        )
        try:
            plan_sweep(config)
        except ConfigError as exc:
            assert f"tunepipe[{extra}]" in str(exc), exc
            assert exc.key == "trainable.framework"
        else:
            raise AssertionError(f"planned a {framework} sweep without {framework}")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
    """
)


def test_core_imports_and_plans_without_torch_or_tensorflow() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().endswith("ok")


def test_missing_framework_gives_an_install_hint() -> None:
    script = SCRIPT.split("import pipelines, search_spaces")[0] + textwrap.dedent(
        """
        from trainables.registry import get_trainable_info
        try:
            get_trainable_info("torch").load_class()
        except ModuleNotFoundError as exc:
            print(exc)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert "pip install 'tunepipe[torch]'" in completed.stdout


def test_only_the_keras_modules_import_tensorflow() -> None:
    """TensorFlow loads only in a Keras trial (or when a Keras model is logged or loaded)."""
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(tensorflow|keras)\b", re.MULTILINE)
    importers = sorted(
        str(path.relative_to(REPO))
        for package in ("pipelines", "trainables", "search_spaces")
        for path in (REPO / package).rglob("*.py")
        if pattern.search(path.read_text())
    )
    assert importers, "the pattern found nothing: it is broken"
    assert all(re.fullmatch(r"trainables/keras_\w+\.py", name) for name in importers), importers
