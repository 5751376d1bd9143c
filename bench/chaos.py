"""Faults at random points, then a resume: how many sweeps came back whole.

For each round a fresh state folder, the chaos suite's sweep (tests/chaos/sweep.yaml: 3 trials
of 6 slow epochs) started with ``tunepipe sweep`` in a session of its own, and one fault at a
random point after a random number of recorded epochs:

- ``sigkill``: SIGKILL to the driver's process group (its local Ray goes with it);
- ``sigterm``: SIGTERM to the driver alone (a graceful stop; exit 143 expected).

Then ``tunepipe sweep --resume`` and a reconciliation of Tune's state, MLflow and the registry
(tests/support/reconcile.py). Prints one line per round and the totals.

    .venv/bin/python bench/chaos.py --rounds 6 [--faults sigkill,sigterm] [--seed N]

Node kills are measured by tests/chaos/test_cluster_faults.py (a two-node cluster per round is
too heavy to repeat on two cores).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.chaos import (
    CHAOS_CONFIG,
    EPOCHS,
    TRIALS,
    driver_env,
    epochs_recorded,
    start_driver,
    wait_until,
)
from tests.support.reconcile import reconcile, tunepipe


def one_round(fault: str, after: int, folder: Path) -> dict[str, object]:
    """Run one sweep, fault it after ``after`` recorded epochs, resume it, reconcile."""
    home = folder / "home"
    env = driver_env(home)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    started = time.monotonic()
    driver = start_driver(str(CHAOS_CONFIG), env=env, cwd=folder, log=folder / "driver.log")
    wait_until(lambda: sum(epochs_recorded(tracking, "chaos")) >= after, 300, "epochs", driver)
    if fault == "sigkill":
        os.killpg(driver.pid, signal.SIGKILL)
    else:
        driver.send_signal(signal.SIGTERM)
    code = driver.wait(timeout=300)
    resumed = tunepipe("sweep", str(CHAOS_CONFIG), "--resume", env=env, cwd=folder)
    ledger = reconcile(tracking, "chaos", EPOCHS)
    whole = (
        resumed.returncode == 0
        and ledger.parents == 1
        and ledger.children == TRIALS == ledger.tune_trials
        and not ledger.lost_trials
        and ledger.duplicated_points == ledger.missing_points == ledger.left_running == 0
        and ledger.tune_unfinished == ledger.missing_checkpoints == 0
        and ledger.model_versions == 1
    )
    return {
        "fault": fault,
        "after_epochs": after,
        "driver_exit": code,
        "resume_exit": resumed.returncode,
        "whole": whole,
        "ledger": ledger,
        "seconds": round(time.monotonic() - started),
    }


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--faults", default="sigkill,sigterm")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    faults = args.faults.split(",")
    print(f"seed {seed}; {args.rounds} rounds of {faults}", flush=True)
    rows = []
    for number in range(args.rounds):
        fault = faults[number % len(faults)]
        after = rng.randint(1, TRIALS * EPOCHS - 2)
        with tempfile.TemporaryDirectory(prefix="tunepipe-chaos-") as folder:
            row = one_round(fault, after, Path(folder))
        rows.append(row)
        ledger = row["ledger"]
        print(
            f"{number + 1:2d} {fault:8s} after {after:2d} epochs: driver exit "
            f"{row['driver_exit']}, resume exit {row['resume_exit']}, "
            f"{'whole' if row['whole'] else 'BROKEN'} in {row['seconds']}s | "
            f"{ledger.summary()}",  # type: ignore[attr-defined]
            flush=True,
        )
    whole = sum(bool(r["whole"]) for r in rows)
    lost = sum(len(r["ledger"].lost_trials) for r in rows)  # type: ignore[attr-defined]
    duplicated = sum(r["ledger"].duplicated_points for r in rows)  # type: ignore[attr-defined]
    print(
        f"total: {len(rows)} faults, {whole} sweeps whole after resume, {lost} trials lost, "
        f"{duplicated} metric points duplicated"
    )


if __name__ == "__main__":
    main()
