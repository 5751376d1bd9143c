"""A trial's resources are checked against the nodes alive now and the autoscaler's node types.

The node types are read where Ray's autoscaler (cluster launcher, KubeRay) publishes them: its
cluster config in the GCS. Running a real autoscaler needs a cloud provider, so the test writes
the record the autoscaler would write into the real GCS of the test's Ray, and removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pipelines.config import ResourcesConfig
from pipelines.errors import ConfigError
from pipelines.sweep.cluster import autoscaler_node_types, check_resources

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def gpu_workers_from_zero() -> Iterator[None]:
    """The autoscaler's record of a cluster with GPU workers that scale from zero to two."""
    import ray._raylet
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    config = autoscaler_pb2.ClusterConfig()
    for name, resources, most in (("head", {"CPU": 2}, 1), ("gpu", {"CPU": 4, "GPU": 1}, 2),
                                  ("big-gpu-off", {"CPU": 8, "GPU": 8}, 0)):  # fmt: skip
        group = config.node_group_configs.add(name=name, min_count=0, max_count=most)
        group.resources.update(resources)
    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    key = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY
    internal_kv._internal_kv_put(key, config.SerializeToString(), namespace=namespace)
    try:
        yield
    finally:
        internal_kv._internal_kv_del(key, namespace=namespace)


def test_a_gpu_request_no_node_can_meet_is_refused_on_a_fixed_cluster() -> None:
    assert autoscaler_node_types() == []
    check_resources(ResourcesConfig(cpu=1, gpu=0))
    with pytest.raises(ConfigError, match=r"no node has 1 CPU and 1 GPU.*largest node: 2 CPU"):
        check_resources(ResourcesConfig(cpu=1, gpu=1))


def test_a_gpu_request_a_node_type_can_meet_waits_for_the_autoscaler(
    gpu_workers_from_zero: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert [name for name, _ in autoscaler_node_types()] == ["head", "gpu"]
    with caplog.at_level(logging.WARNING, logger="pipelines.sweep.cluster"):
        check_resources(ResourcesConfig(cpu=2, gpu=1))
    assert "waits for the autoscaler to start a gpu node" in caplog.text
    # Eight GPUs: only a node type capped at zero nodes has them, so it can never run.
    with pytest.raises(ConfigError, match=r"no autoscaler node type has them either"):
        check_resources(ResourcesConfig(cpu=1, gpu=8))
