"""Connecting to Ray: a private local instance by default, an existing cluster when asked."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.config import ResourcesConfig
from pipelines.errors import ConfigError
from trainables.results import PLACEMENT_GROUP

logger = logging.getLogger(__name__)

#: What the driver of a data-parallel trial reserves: a sliver of a CPU (Ray refuses a request
#: of zero), its Train workers reserving their own.
DRIVER_CPU = 0.01


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
        _check_worker_group(nodes, resources)
        _check_node_labels(nodes, resources)
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


def _check_worker_group(nodes: list[dict[str, Any]], resources: ResourcesConfig) -> None:
    """Refuse data-parallel trials whose workers, together, exceed the whole cluster.

    Each worker fits a node (checked above), but Ray Train starts a trial's workers all at once
    (one placement group): with too few in total it waits forever. An autoscaler that may add
    nodes makes it a wait, not an error.
    """
    if resources.workers <= 1 or autoscaler_node_types():
        return
    total = {
        kind: sum(node.get("Resources", {}).get(kind, 0) for node in nodes)
        for kind in ("CPU", "GPU")
    }
    need = {
        "CPU": resources.workers * resources.cpu + DRIVER_CPU,
        "GPU": resources.workers * resources.gpu,
    }
    short = [kind for kind in ("CPU", "GPU") if need[kind] > total[kind] + 1e-9]
    if short:
        raise ConfigError(
            f"a trial's {resources.workers} workers need {need['CPU']:g} CPU and "
            f"{need['GPU']:g} GPU together, the cluster has {total['CPU']:g} CPU and "
            f"{total['GPU']:g} GPU",
            key="resources.workers",
            fix="lower resources.workers or resources.cpu/gpu per worker, or add nodes",
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


def _check_node_labels(nodes: list[dict[str, Any]], resources: ResourcesConfig) -> None:
    """Refuse a label selector no node that fits a trial matches (it would wait forever).

    An autoscaler may start a labelled node later: then it is a wait, said once.
    """
    wanted = resources.node_labels
    if not wanted:
        return
    hosts = [node for node in nodes if _fits(node.get("Resources", {}), resources)]
    if any(matches_labels(node.get("Labels", {}), wanted) for node in hosts):
        return
    shown = ", ".join(f"{key}={value}" for key, value in wanted.items())
    if autoscaler_node_types():
        logger.warning("no node labelled %s can host a trial yet: the sweep waits for one", shown)
        return
    raise ConfigError(
        f"no node that can host a trial is labelled {shown} ({len(nodes)} nodes alive)",
        key="resources.node_labels",
        fix='label the nodes (`ray start --labels=\'{"pool": "cpu"}\'`) or change the selector',
    )


def matches_labels(labels: dict[str, str], selector: dict[str, str]) -> bool:
    """Whether a node's labels satisfy a Ray selector: ``v``, ``!v``, ``in(a, b)``, ``!in(a, b)``.

    A negated term also matches a node without the key, as Ray's scheduler reads it.
    """
    for key, term in selector.items():
        negated = term.startswith("!")
        term = term.removeprefix("!")
        if term.startswith("in(") and term.endswith(")"):
            values = {value.strip() for value in term[3:-1].split(",")}
        else:
            values = {term}
        if (labels.get(key) in values) == negated:
            return False
    return True


def train_placement_groups(grid: Any) -> set[str]:
    """Return the ids of the placement groups the sweep's data-parallel trials' Train runs held.

    Every report of such a trial names its run's group (``train_placement_group``); a retried
    trial's earlier attempts are in its earlier reports.
    """
    found: set[str] = set()
    for result in grid:
        frame = getattr(result, "metrics_dataframe", None)
        if frame is not None and PLACEMENT_GROUP in frame:
            found.update(str(value) for value in frame[PLACEMENT_GROUP].dropna() if value)
    return found


def release_placement_groups(ids: set[str]) -> None:
    """Remove the given placement groups that are still held once the sweep's trials ended.

    When Tune ends a sweep it kills the trials' actors, and a Train run dies with its trial's
    actor (its owner) before it can remove its workers' placement group; Ray Train's own
    cleaner needs the dashboard's state API, which a local instance runs without. Left alone,
    the groups would hold their CPUs and GPUs until the Ray instance stops.
    """
    import ray
    from ray.util.placement_group import PlacementGroup

    if not ids:
        return
    table = ray.util.placement_group_table()
    for group_id in ids:
        if table.get(group_id, {}).get("state") not in (None, "REMOVED"):
            group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
            ray.util.remove_placement_group(group)
            logger.debug("removed the placement group %s a Train run left", group_id)
