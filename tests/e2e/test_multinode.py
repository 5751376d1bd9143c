"""Trials spread over a two-node Ray cluster started by the test on this machine."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import CONFIGS
from tests.support.scripts import run_for_result

#: Two nodes of one CPU each on this machine, for the script that follows.
CLUSTER = textwrap.dedent(
    """
    import json, sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    """
)
SCRIPT = CLUSTER + textwrap.dedent(
    """
    try:
        from pipelines import run_sweep
        from pipelines.config import load_config

        config = load_config(sys.argv[1], {"search.num_samples": 4, "trainable.params.epochs": 2})
        summary = run_sweep(config, address=cluster.address, progress=False)
        trial_nodes = sorted({r.metrics["node_id"] for r in summary.results})
        cluster_nodes = sorted(node.node_id for node in cluster.list_all_nodes())
        print("RESULT " + json.dumps({"trial_nodes": trial_nodes, "cluster_nodes": cluster_nodes,
                                     "trials": len(list(summary.results))}))
    finally:
        cluster.shutdown()
    """
)


@pytest.mark.slow  # starts a two-node Ray cluster of its own: about a minute on 2 CPUs
def test_trials_run_on_both_nodes_of_a_two_node_cluster() -> None:
    outcome = _run_on_cluster(SCRIPT, str(CONFIGS / "digits_mlp_random.yaml"))
    assert outcome["trials"] == 4
    assert len(outcome["cluster_nodes"]) == 2
    assert outcome["trial_nodes"] == outcome["cluster_nodes"]


RUNTIME_SCRIPT = CLUSTER + textwrap.dedent(
    """
    try:
        from pipelines import run_sweep
        from pipelines.config import load_config
        from pipelines.sweep.plan import plan_sweep

        # The trials get no path to the module from this machine: only the runtime environment.
        search_path = plan_sweep(load_config(sys.argv[1])).info.search_path
        summary = run_sweep(sys.argv[1], address=cluster.address, progress=False)
        print("RESULT " + json.dumps({
            "search_path": search_path,
            "trial_nodes": sorted({r.metrics["node_id"] for r in summary.results}),
            "errors": [str(r.error)[-300:] for r in summary.results if r.error],
            "completed": summary.end_reasons["completed"],
        }))
    finally:
        cluster.shutdown()
    """
)
USER_MODULE = textwrap.dedent(
    """
    from torch import nn


    def build(hp, spec):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, int(hp["width"])), nn.ReLU(),
                             nn.Linear(int(hp["width"]), spec.num_outputs))
    """
)


@pytest.mark.slow  # a two-node cluster of its own and a runtime environment: about a minute
def test_the_users_module_reaches_every_node_through_the_runtime_environment(
    tmp_path: Path,
) -> None:
    """The module lives in a folder no worker has on its path; only runtime.working_dir
    carries it to the nodes (the driver runs in the repository, the workers elsewhere)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "remote_mlp.py").write_text(USER_MODULE)
    (project / "space.yaml").write_text("parameters:\n  width: {type: int, low: 8, high: 32}\n")
    (project / "experiment.yaml").write_text(
        textwrap.dedent(
            """
            name: runtime_env
            metric: val_accuracy
            mode: max
            data: {dataset: digits}
            trainable:
              framework: torch
              target: remote_mlp:build
              search_space: space.yaml
              params: {epochs: 2, batch_size: 64, optimizer: adam, lr: 0.01}
            search: {method: random, num_samples: 4}
            runtime:
              working_dir: .
            """
        )
    )
    outcome = _run_on_cluster(RUNTIME_SCRIPT, str(project / "experiment.yaml"))
    assert outcome["search_path"] is None  # no path from the driver's machine reaches a trial
    assert outcome["errors"] == [] and outcome["completed"] == 4
    assert len(outcome["trial_nodes"]) == 2  # both nodes imported the module


#: A head that runs no work, a CPU node labelled as such and a GPU node (a declared GPU: Ray
#: schedules by the resources and labels a node declares, and reads only those). The head runs
#: the dashboard, whose state API says afterwards on which node every task ran.
MIXED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True}
    )
    cpu_node = cluster.add_node(num_cpus=2, labels={"pool": "cpu"})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        from pipelines import run_sweep
        from pipelines.config import load_config

        config = load_config(sys.argv[1], {"search.num_samples": 4, "trainable.params.epochs": 2,
                                           "search.max_concurrent": 2,
                                           "resources.node_labels": {"pool": "cpu"}})
        summary = run_sweep(config, address=cluster.address, progress=False)
        import time
        from ray.util.state import list_tasks

        # The per-epoch augmentation: Ray Data's map tasks, submitted by each trial. Workers
        # report task events about once a second, and a task whose executor has not reported
        # yet has no node: those are left out.
        time.sleep(3)
        augment = [t.node_id for t in list_tasks(
            address=cluster.address, filters=[("type", "=", "NORMAL_TASK")], limit=10_000,
            raise_on_missing_output=False) if "MapBatches" in t.name and t.node_id]
        print("RESULT " + json.dumps({
            "trial_nodes": sorted({r.metrics["node_id"] for r in summary.results}),
            "augment_nodes": sorted(set(augment)), "augment_tasks": len(augment),
            "cpu_node": cpu_node.node_id, "gpu_node": gpu_node.node_id,
            "completed": summary.end_reasons["completed"],
        }))
    finally:
        cluster.shutdown()
    """
)


@pytest.mark.slow  # a three-node cluster of its own: about a minute
def test_cpu_only_trials_and_their_augmentation_stay_off_the_gpu_node() -> None:
    """Ray packs trials' placement groups onto a GPU node as readily as onto a CPU one (its
    avoid-GPU-nodes preference covers plain tasks only; without the selector this very sweep put
    trials on the GPU node). ``resources.node_labels`` keeps them on the labelled CPU node,
    which two trials at a time fill exactly.

    Each trial's per-epoch augmentation follows it there: Ray Data spreads its small tasks over
    every node, and zero-CPU tasks fit anywhere, so unpinned they ran on the GPU node and on the
    CPU-less head. (The one-time preprocessing runs in the driver process, wherever the user
    starts it: here on the head, where no trial can be placed.)"""
    outcome = _run_on_cluster(MIXED_SCRIPT, str(CONFIGS / "digits_mlp_random.yaml"))
    assert outcome["completed"] == 4
    assert outcome["trial_nodes"] == [outcome["cpu_node"]], outcome
    # Four trials of two epochs submit at least eight; unpinned, a third of them each landed on
    # the CPU node, so even half of them seen on it alone is no accident.
    assert outcome["augment_tasks"] >= 4, outcome
    assert outcome["augment_nodes"] == [outcome["cpu_node"]], outcome


def _run_on_cluster(script: str, config: str) -> dict[str, Any]:
    """Run ``script`` (which starts its own cluster) on ``config``; return its RESULT line."""
    return run_for_result(script, config)
