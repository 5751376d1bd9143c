"""The core imports and plans a sweep without torch or TensorFlow installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

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
    import pipelines.cli, pipelines.tuning, pipelines.tracking, trainables.adapter
    from pipelines.config import load_config
    from pipelines.validate import plan_sweep

    plan = plan_sweep(load_config("pipelines/configs/mnist_cnn.yaml"))
    assert plan.max_epochs == 9
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
    """
)


def test_core_imports_and_plans_without_torch() -> None:
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
