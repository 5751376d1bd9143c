"""Trials spread over a two-node Ray cluster started by the test on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.configs import CONFIGS, REPO

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
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
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(CONFIGS / "digits_mlp_random.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stdout[-3000:] + completed.stderr[-3000:]
    outcome = json.loads(lines[-1].removeprefix("RESULT "))
    assert outcome["trials"] == 4
    assert len(outcome["cluster_nodes"]) == 2
    assert outcome["trial_nodes"] == outcome["cluster_nodes"]
