"""Connecting to Ray: a private local instance by default, an existing cluster when asked."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.config import ResourcesConfig
from pipelines.errors import ConfigError

logger = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None, runtime_env: dict[str, Any] | None = None) -> Iterator[None]:
    """Use the running Ray instance, connect to ``address``/``RAY_ADDRESS``, or start a local one.

    A local instance is started with ``address="local"`` so a sweep never attaches by accident to
    another cluster running on the same machine. Only an instance started here is shut down here.
    ``runtime_env`` (the config's ``runtime`` section) ships the user's code and packages to
    every node; a Ray instance this process started earlier keeps the environment it has.
    """
    import ray

    if ray.is_initialized():
        if runtime_env:
            logger.warning(
                "Ray is already running in this process: the config's runtime section is not "
                "applied (start the sweep in a fresh process, or pass it to your ray.init)"
            )
        yield
        return
    # Private by default: no usage statistics leave the machine unless the user opts in.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(
        address=target,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=True,
        logging_level=logging.WARNING,
        runtime_env=runtime_env,
    )
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(resources: ResourcesConfig) -> None:
    """Fail before any trial starts if no node could ever host one trial.

    A node alive now will do; so will a node type the cluster's autoscaler may still start (GPU
    workers that scale from zero): the sweep then says it waits for one. A request no alive
    node and no node type can meet is refused.
    """
    nodes = _alive_nodes()
    if any(_fits(node.get("Resources", {}), resources) for node in nodes):
        return
    types = autoscaler_node_types()
    startable = [name for name, have in types if _fits(have, resources)]
    if startable:
        logger.warning(
            "no node can host a trial (%g CPU, %g GPU) yet: the sweep waits for the autoscaler "
            "to start a %s node",
            resources.cpu,
            resources.gpu,
            " or ".join(startable),
        )
        return
    largest_cpu = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
    largest_gpu = max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0)
    scaling = f"; no autoscaler node type has them either ({len(types)} types)" if types else ""
    raise ConfigError(
        f"no node has {resources.cpu:g} CPU and {resources.gpu:g} GPU for one trial "
        f"(largest node: {largest_cpu:g} CPU, {largest_gpu:g} GPU){scaling}",
        key="resources",
        fix="lower resources.cpu/resources.gpu or add nodes (or node types) with GPUs",
    )


def autoscaler_node_types() -> list[tuple[str, dict[str, float]]]:
    """Return the node types the cluster's autoscaler may start: ``(name, resources)``.

    The autoscaler (cluster launcher, KubeRay) publishes its node groups in the GCS, which is
    where Ray Data reads them too; a cluster without an autoscaler has none. Types capped at
    zero nodes are left out.
    """
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception as exc:  # an older Ray, or a GCS that does not answer: no types known
        logger.debug("no autoscaler config: %s", exc)
        return []
    if not config:
        return []
    return [
        (group.name, dict(group.resources))
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def _fits(have: dict[str, Any], resources: ResourcesConfig) -> bool:
    return bool(have.get("CPU", 0) >= resources.cpu and have.get("GPU", 0) >= resources.gpu)
