"""The MLflow UI of a real sweep, in headless Chromium, from the link ``tunepipe ui`` prints.

Chromium is Debian's package (``/usr/bin/chromium``), driven by Playwright with an explicit
executable path: no browser is downloaded. Screenshots go to ``test-screenshots/`` at the repo
root for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import run_sweep
from pipelines.config import load_config
from tests.support.configs import CONFIGS, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "test-screenshots"
pytestmark = [
    pytest.mark.slow,  # a sweep, an MLflow server and a browser: ~2 min, run by make test-slow
    pytest.mark.usefixtures("ray_local"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium package"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def swept(tmp_path: Path) -> tuple[Path, Any]:
    """A finished 2-trial sweep and the config file that points at its store."""
    raw = yaml.safe_load((CONFIGS / "digits_mlp_random.yaml").read_text())
    raw["trainable"]["search_space"] = str(REPO / "search_spaces" / "library" / "mlp.yaml")
    raw["search"]["num_samples"] = 2
    raw["trainable"]["params"]["epochs"] = 2
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    raw["storage"] = {"path": str(tmp_path / "ray_results")}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, run_sweep(load_config(path), progress=False)


@pytest.fixture()
def ui_link(swept: tuple[Path, Any]) -> Iterator[str]:
    """Run ``tunepipe ui`` over the sweep's store; yield the link it printed."""
    config, _ = swept
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "ui", str(config), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", line)
        assert match, line + (server.stderr.read() if server.poll() is not None else "")
        yield match.group(1)
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: the UI stops its MLflow server with it
        server.wait(timeout=30)


def test_the_sweep_reads_at_a_glance_in_the_mlflow_ui(
    swept: tuple[Path, Any], ui_link: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    _, summary = swept
    SHOTS.mkdir(exist_ok=True)
    expect.set_options(timeout=30_000)  # the UI's first load on a busy 2-core box is slow
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(60_000)

        # The printed link opens the sweep's parent run.
        page.goto(ui_link)
        expect(page.get_by_text("Child runs", exact=True)).to_be_visible()
        children = page.get_by_role("link", name=re.compile(r"^trial-00[01] "))
        expect(children).to_have_count(2)
        expect(page.get_by_role("heading", name="Registered models")).to_be_visible()
        model = page.get_by_role("link").filter(has_text=summary.experiment_name)
        expect(model.filter(has_text=f"v{summary.model_version}").first).to_be_visible()
        expect(page.get_by_text("best.lr", exact=True).first).to_be_visible()
        page.screenshot(path=str(SHOTS / "parent_run.png"), full_page=True)

        # Its artifacts hold the plots.
        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("plots", exact=True).click()
        expect(page.get_by_text("learning_curves.png")).to_be_visible()
        page.get_by_text("learning_curves.png").click()
        page.screenshot(path=str(SHOTS / "parent_plots.png"), full_page=True)

        # A child run has its per-epoch metric charts (opened in the same classic ML view).
        page.goto(ui_link)
        child = page.get_by_role("link", name=re.compile(r"^trial-000 ")).get_attribute("href")
        assert child is not None
        page.goto(ui_link.split("#")[0] + child.split("?")[0] + "?workflowType=machine_learning")
        page.get_by_role("tab", name="Model metrics").click()
        expect(page.get_by_text("val_loss", exact=True).first).to_be_visible()
        expect(page.get_by_text("Step").first).to_be_visible()  # the charts have drawn their axes
        page.screenshot(path=str(SHOTS / "child_metrics.png"), full_page=True)

        # The experiment's run list nests the trials under the sweep.
        page.goto(ui_link.split("/runs/")[0] + "?workflowType=machine_learning")
        sweep_link = page.get_by_role("link", name=re.compile(r"^sweep-"))
        sweep_link.first.wait_for()
        trials = page.get_by_role("link", name=re.compile(r"^trial-00[01] "))
        expect(trials).to_have_count(0)  # folded under the sweep...
        cell = page.locator("[role=gridcell]").filter(has=sweep_link).first
        cell.get_by_role("button").first.click()  # ...until its expander is clicked
        expect(trials).to_have_count(2)
        page.screenshot(path=str(SHOTS / "experiment_runs.png"), full_page=True)
        browser.close()
