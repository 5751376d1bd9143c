"""Planning data-parallel trials: what Tune reserves, how many run at once, what is refused."""

from __future__ import annotations

import pytest

from pipelines.config import ResourcesConfig
from pipelines.errors import ConfigError
from pipelines.sweep.cluster import (
    DRIVER_CPU,
    _check_node_labels,
    _check_worker_group,
    matches_labels,
)
from pipelines.sweep.plan import plan_sweep
from pipelines.sweep.tuner import max_concurrent_trials, trial_request
from tests.support.configs import shrunk


def _plan(**overrides: object) -> object:
    return plan_sweep(shrunk("digits_mlp_random.yaml", **overrides))


def test_a_data_parallel_trial_reserves_a_sliver_its_workers_the_rest() -> None:
    plan = _plan(resources={"cpu": 2, "gpu": 1, "workers": 4})
    assert trial_request(plan) == {"cpu": DRIVER_CPU}  # type: ignore[arg-type]
    single = _plan(resources={"cpu": 2, "gpu": 0.5})
    assert trial_request(single) == {"cpu": 2, "gpu": 0.5}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("resources", "limit", "cluster", "expected"),
    [
        ({"cpu": 0.45, "workers": 2}, None, {"CPU": 2.0}, 2),  # 2 x (0.9 + driver) fits
        ({"cpu": 1, "workers": 2}, None, {"CPU": 8.0}, 3),  # 3 x 2.01 <= 8 < 4 x 2.01
        ({"cpu": 1, "gpu": 1, "workers": 2}, None, {"CPU": 64.0, "GPU": 4.0}, 2),  # GPUs bind
        ({"cpu": 1, "workers": 2}, 1, {"CPU": 8.0}, 1),  # the config's limit is lower
        ({"cpu": 1}, None, {"CPU": 8.0}, None),  # single-process trials: Tune decides
    ],
)
def test_trials_in_flight_are_capped_at_what_the_cluster_holds(
    resources: dict[str, float], limit: int | None, cluster: dict[str, float], expected: int | None
) -> None:
    plan = _plan(resources=resources, **{"search.max_concurrent": limit})
    assert max_concurrent_trials(plan, cluster) == expected  # type: ignore[arg-type]


def test_workers_that_together_exceed_the_cluster_are_refused() -> None:
    nodes = [{"Resources": {"CPU": 2.0}}]
    _check_worker_group(nodes, ResourcesConfig(cpu=0.45, workers=2))  # fits beside its driver
    with pytest.raises(ConfigError, match=r"2 workers need 2\.01 CPU") as caught:
        _check_worker_group(nodes, ResourcesConfig(cpu=1, workers=2))
    assert caught.value.key == "resources.workers"


def test_node_labels_become_the_trials_placement_group_label_selector() -> None:
    plan = _plan(resources={"cpu": 1, "gpu": 0.5, "node_labels": {"pool": "gpu-a"}})
    request = trial_request(plan)
    assert request.bundles == [{"CPU": 1, "GPU": 0.5}]
    assert request._bound.kwargs["bundle_label_selector"] == [{"pool": "gpu-a"}]
    with pytest.raises(ConfigError, match="data-parallel"):
        _plan(resources={"workers": 2, "node_labels": {"pool": "cpu"}})


@pytest.mark.parametrize(
    ("labels", "selector", "expected"),
    [
        ({"pool": "cpu"}, {"pool": "cpu"}, True),
        ({"pool": "gpu"}, {"pool": "cpu"}, False),
        ({}, {"pool": "cpu"}, False),
        ({"pool": "gpu"}, {"pool": "!gpu"}, False),
        ({}, {"pool": "!gpu"}, True),  # a negated term matches a node without the key
        ({"zone": "b"}, {"zone": "in(a, b)"}, True),
        ({"zone": "c"}, {"zone": "!in(a, b)"}, True),
        ({"zone": "a", "pool": "gpu"}, {"zone": "a", "pool": "cpu"}, False),
    ],
)
def test_a_label_selector_matches_as_rays_scheduler_reads_it(
    labels: dict[str, str], selector: dict[str, str], expected: bool
) -> None:
    assert matches_labels(labels, selector) is expected


def test_a_selector_no_node_that_fits_matches_is_refused_on_a_fixed_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pipelines.sweep.cluster.autoscaler_node_types", lambda: [])
    nodes = [
        {"Resources": {"CPU": 4.0}, "Labels": {"pool": "cpu"}},
        {"Resources": {"CPU": 1.0}, "Labels": {"pool": "tiny"}},
    ]
    _check_node_labels(nodes, ResourcesConfig(cpu=2, node_labels={"pool": "cpu"}))
    # The one node labelled tiny is too small for a trial: a sweep that waits forever.
    with pytest.raises(ConfigError, match="no node that can host a trial is labelled pool=tiny"):
        _check_node_labels(nodes, ResourcesConfig(cpu=2, node_labels={"pool": "tiny"}))


def test_data_parallel_trials_are_refused_for_what_cannot_run_them() -> None:
    keras = {"trainable.framework": "tensorflow", "resources.workers": 2}
    plan_sweep(shrunk("digits_mlp_random.yaml", **keras))  # Keras trials run data-parallel
    with pytest.raises(ConfigError, match="need the torch or Keras") as caught:
        plan_sweep(shrunk("digits_random_forest.yaml", **{"resources.workers": 2}))
    assert caught.value.key == "resources.workers"
    fp16 = {**keras, "resources.gpu": 1, "trainable.params.precision": "fp16"}
    with pytest.raises(ConfigError, match="fp16 is not supported in data-parallel") as caught:
        plan_sweep(shrunk("digits_mlp_random.yaml", **fp16))
    assert caught.value.key == "trainable.params.precision"
