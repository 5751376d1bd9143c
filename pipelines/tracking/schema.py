"""The vocabulary tunepipe writes into MLflow: run kinds, tag names, aliases and artifact paths.

Every tag, alias and artifact folder tunepipe reads or writes is named here once, so a query and
the write it looks for cannot drift apart, and a person can read the whole MLflow layout of a
sweep in one file:

- a sweep is a parent run (``tunepipe.kind = sweep``) holding the resolved config, the best
  trial (``best.<name>`` tags, ``best_<metric>``, ``best_checkpoint/``), plots and the model;
- each trial is a child run (``mlflow.parentRunId``, ``tunepipe.kind = trial``) with its
  hyperparameters, per-epoch metrics, reproducibility record and end reason;
- a retrain is the re-tune's sweep run, tagged with its stage and decision, or a small run of
  kind ``retrain`` when it skipped; the registered model carries ``challenger`` and ``champion``.
"""

from __future__ import annotations

from typing import Final

# Run kinds (tag KIND).
KIND: Final = "tunepipe.kind"
KIND_SWEEP: Final = "sweep"
KIND_TRIAL: Final = "trial"
KIND_RETRAIN: Final = "retrain"

#: MLflow's own tag that nests a run under its parent in the UI.
PARENT: Final = "mlflow.parentRunId"
#: MLflow's own tag holding a run's display name.
RUN_NAME: Final = "mlflow.runName"

# What a sweep ran (parent run).
SEARCHER: Final = "tunepipe.searcher"
SCHEDULER: Final = "tunepipe.scheduler"
FRAMEWORK: Final = "tunepipe.framework"
METRIC: Final = "tunepipe.metric"
MODE: Final = "tunepipe.mode"
SEARCHED: Final = "tunepipe.searched"
DATA_FINGERPRINT: Final = "tunepipe.data_fingerprint"
DATA_MODALITY: Final = "tunepipe.data_modality"
#: "hit" when the sweep reused preprocessing from an earlier one (pipelines.data.cache).
DATA_CACHE: Final = "tunepipe.data_cache"
WARM_START_TRIALS: Final = "tunepipe.warm_start_trials"
#: How often the sweep was extended (``tunepipe sweep --extend``).
EXTENSIONS: Final = "tunepipe.extensions"
#: Why a sweep produced nothing usable.
OUTCOME: Final = "tunepipe.outcome"
#: Where the sweep's Tune experiment lives (storage URI + name): what ``--resume`` restores.
TUNE_EXPERIMENT: Final = "tunepipe.tune_experiment"
#: The process driving the sweep (``host:pid:start``) and when it last showed it was alive.
DRIVER: Final = "tunepipe.driver"
HEARTBEAT: Final = "tunepipe.heartbeat"
#: How often the sweep was resumed after its driver stopped (``tunepipe sweep --resume``).
RESUMES: Final = "tunepipe.resumes"
#: The client-made key of a sweep's run: the spool finds the run by it instead of creating it
#: twice (pipelines.tracking.spool), and ``--resume`` accepts it where the id is not known yet.
WRITE_KEY: Final = "tunepipe.write_key"

# The best trial of a sweep (parent run). Tags, not params: MLflow params are write-once, and an
# extension can find a better trial.
BEST_PREFIX: Final = "best."
BEST_CONFIG: Final = "tunepipe.best_config"
BEST_TRIAL_ID: Final = "tunepipe.best_trial_id"
BEST_EPOCH: Final = "tunepipe.best_epoch"
BEST_CHILD_RUN_ID: Final = "tunepipe.best_child_run_id"
MODEL_VERSION: Final = "tunepipe.model_version"

# One trial (child run).
TRIAL_ID: Final = "tunepipe.trial_id"
TRIAL_INDEX: Final = "tunepipe.trial_index"
SEED: Final = "tunepipe.seed"
CODE_VERSION: Final = "tunepipe.code_version"
PACKAGES: Final = "tunepipe.packages"
END_REASON: Final = "tunepipe.end_reason"
END_DETAIL: Final = "tunepipe.end_detail"
#: What the trial computed on ("cpu", "cuda:0 NVIDIA H200") and the Ray node it ran on; a
#: retried trial that moved is tagged again (the tags say where it ran last).
DEVICE: Final = "tunepipe.device"
NODE_ID: Final = "tunepipe.node_id"
LAST_RETRY_ERROR: Final = "tunepipe.last_retry_error"

#: How a trial ended; diverged and failed trials are never trusted as results.
END_REASONS: Final = ("completed", "stopped_early", "early_stopped", "diverged", "failed")
#: A run (sweep or trial) whose driver stopped before it ended: a signal, or a driver that died.
#: Not a result; ``--resume`` reopens it.
INTERRUPTED: Final = "interrupted"
TRUSTED_END_REASONS: Final = frozenset({"completed", "stopped_early", "early_stopped"})

# Retraining (the re-tune's sweep run, or a skip record of kind "retrain").
RETRAIN: Final = "tunepipe.retrain"
RETRAIN_STAGE: Final = "tunepipe.retrain_stage"
RETRAIN_DECISION: Final = "tunepipe.retrain_decision"
RETRAIN_REASON: Final = "tunepipe.retrain_reason"
CHALLENGER_VERSION: Final = "tunepipe.challenger_version"
CHAMPION_BEFORE: Final = "tunepipe.champion_before"
CHAMPION_AFTER: Final = "tunepipe.champion_after"
#: Stages a retrain passes through, in order; "abandoned" marks one killed while tuning.
RETRAIN_STAGES: Final = ("tuning", "registered", "evaluated", "decided")
STAGE_ABANDONED: Final = "abandoned"
STAGE_DECIDED: Final = "decided"
#: Decisions a retrain records: "failed" when the champion could not be scored for a reason
#: that may pass (MLflow or the network down); the champion then stays, and the next retrain
#: judges the same challenger again.
RETRAIN_DECISIONS: Final = ("promoted", "kept", "skipped", "failed")
DECISION_FAILED: Final = "failed"
#: What a retrain's model was trained for (framework, task, input shape, classes, feature
#: columns), as JSON: a later retrain that cannot score it on its data says which one changed.
MODEL_INPUTS: Final = "tunepipe.model_inputs"
#: Why a champion was replaced without a score: which of its inputs today's data no longer has
#: (``framework``, ``not_installed``, ``input_shape``, ...).
CHAMPION_INCOMPATIBLE: Final = "tunepipe.champion_incompatible"

# Registered model aliases: every sweep's best becomes the challenger; a retrain promotes it.
CHALLENGER: Final = "challenger"
CHAMPION: Final = "champion"
#: Model version tags.
VERSION_FRAMEWORK: Final = "tunepipe.framework"
VERSION_DECISION: Final = "retrain_decision"

# Artifact paths.
SWEEP_ARTIFACTS: Final = "sweep"
BEST_CHECKPOINT: Final = "best_checkpoint"
PLOTS: Final = "plots"
MODEL: Final = "model"
TRIAL_RECORD: Final = "reproduce/trial.json"


def best_metric(metric: str) -> str:
    """Return the parent-run metric that holds the sweep's best so far (one step a sweep)."""
    return f"best_{metric}"


def holdout_metric(metric: str) -> str:
    """Return the retrain metric that holds the challenger's holdout score."""
    return f"holdout_{metric}"


def champion_holdout_metric(metric: str) -> str:
    """Return the retrain metric that holds the previous champion's holdout score."""
    return f"champion_holdout_{metric}"


def children_of(run_id: str) -> str:
    """Return the MLflow search filter for the child runs (trials) of a sweep."""
    return f"tags.`{PARENT}` = '{run_id}'"


def trial_of(run_id: str, trial_id: str) -> str:
    """Return the MLflow search filter for the child run of one Tune trial of a sweep."""
    return f"{children_of(run_id)} and tags.`{TRIAL_ID}` = '{trial_id}'"


def of_kind(kind: str) -> str:
    """Return the MLflow search filter for the runs of one kind (``sweep``, ``retrain``)."""
    return f"tags.`{KIND}` = '{kind}'"
