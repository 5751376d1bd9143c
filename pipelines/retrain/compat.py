"""Whether a champion that failed to score is incompatible with today's data, or unreachable.

A champion that cannot score today's holdout is replaced without a score only when the failure
is known to repeat on every try: it was trained with another framework, its framework is not
installed here, or its model does not fit today's inputs (another input shape, class count,
task or feature columns). Anything else (MLflow or the network down, an artifact that cannot be
read, an error nobody recognises) may pass, so the retrain fails and the champion stays: an
outage must never demote it.

The evidence that a local failure is a mismatch comes from the champion's recorded inputs
(:data:`~pipelines.tracking.schema.MODEL_INPUTS`, written by every retrain) or, for a champion
recorded before those existed, from the frameworks' own words for a mismatch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from pipelines.sweep.plan import SweepPlan
from trainables.protocol import DataSpec

#: Local errors (the model's files are already on disk) that a mismatch raises in torch, Keras
#: and scikit-learn. Only these count, and only with evidence that the inputs changed.
MISMATCH_TYPES = (ValueError, RuntimeError, IndexError, KeyError, TypeError)

#: The frameworks' own messages for a model that does not fit the data it is given; used when
#: the champion has no recorded inputs to compare.
KNOWN_MISMATCHES = re.compile(
    r"size mismatch"  # torch: load_state_dict into a model built for other inputs or classes
    r"|shapes cannot be multiplied"  # torch: a forward pass on inputs of another width
    r"|X has \d+ features, but"  # scikit-learn: predict on another number of features
    r"|is incompatible with the layer"  # Keras: inputs of another shape
    r"|[Ss]hape mismatch"  # Keras: weights of another shape
)


class IncompatibleModel(Exception):
    """The champion can never score today's data: it is no rival, and is replaced.

    Attributes:
        what: Which input changed: ``framework``, ``not_installed``, ``task``,
            ``input_shape``, ``num_classes``, ``feature_columns`` or ``shape``.

    """

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what = what


@dataclass(frozen=True)
class ModelInputs:
    """What a model was trained for, as a retrain records it with the model.

    Attributes:
        framework: The trainable's framework (``torch``, ``sklearn``, ``function``...).
        task: ``classification`` or ``regression``.
        input_shape: Shape of one example.
        num_classes: Number of classes (0 for regression).
        feature_columns: The table columns it read (None: not configured, all numeric ones).

    """

    framework: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int
    feature_columns: tuple[str, ...] | None = None

    def to_json(self) -> str:
        """Return the record as the JSON tag value."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> ModelInputs | None:
        """Read a recorded tag value; None when absent or unreadable (treated as unknown)."""
        if not text:
            return None
        try:
            raw: dict[str, Any] = json.loads(text)
            columns = raw.get("feature_columns")
            return cls(
                framework=str(raw["framework"]),
                task=str(raw["task"]),
                input_shape=tuple(int(n) for n in raw["input_shape"]),
                num_classes=int(raw["num_classes"]),
                feature_columns=None if columns is None else tuple(str(c) for c in columns),
            )
        except (ValueError, KeyError, TypeError):
            return None


def inputs_of(plan: SweepPlan, spec: DataSpec) -> ModelInputs:
    """Return what a model of ``plan`` trained on data described by ``spec`` expects."""
    columns = plan.config.data.feature_columns
    return ModelInputs(
        framework=plan.info.framework,
        task=spec.task,
        input_shape=tuple(spec.input_shape),
        num_classes=spec.num_classes,
        feature_columns=None if columns is None else tuple(columns),
    )


def check_framework(recorded: str | None, today: str, installed: bool) -> None:
    """Raise :class:`IncompatibleModel` if the champion needs another framework than today's.

    Today's trainable reads the champion's checkpoint, so one written by another framework can
    never be loaded. ``recorded`` None (not known) is no evidence of a mismatch.
    """
    if recorded is None or recorded == today:
        return
    if not installed:
        raise IncompatibleModel(
            "not_installed",
            f"it was trained with {recorded}, which is not installed here "
            f"(today's trainable is {today})",
        )
    raise IncompatibleModel(
        "framework", f"it was trained with {recorded}, and today's trainable is {today}"
    )


def differences(recorded: ModelInputs, today: ModelInputs) -> list[tuple[str, str]]:
    """Return ``(what, sentence)`` for each input the champion expects that today's data lacks."""
    found = []
    if recorded.task != today.task:
        found.append(("task", f"it does {recorded.task}, today's data is {today.task}"))
    if recorded.input_shape != today.input_shape:
        found.append(
            (
                "input_shape",
                f"it expects inputs of shape {recorded.input_shape}, today's data has "
                f"{today.input_shape}",
            )
        )
    if recorded.num_classes != today.num_classes:
        found.append(
            (
                "num_classes",
                f"it predicts {recorded.num_classes} classes, today's data has "
                f"{today.num_classes}",
            )
        )
    if None not in (recorded.feature_columns, today.feature_columns) and (
        recorded.feature_columns != today.feature_columns
    ):
        found.append(
            (
                "feature_columns",
                f"it reads feature columns {list(recorded.feature_columns or ())}, today's "
                f"data has {list(today.feature_columns or ())}",
            )
        )
    return found


def incompatibility(
    error: BaseException, recorded: ModelInputs | None, today: ModelInputs
) -> IncompatibleModel | None:
    """Return why a local scoring ``error`` means the champion can never score this data.

    Args:
        error: What loading or scoring the champion's downloaded model raised.
        recorded: The inputs the champion was trained for (None: not recorded).
        today: The inputs today's data has.

    Returns:
        The incompatibility, or None when the error is not known to repeat (then it may pass,
        and the caller fails the retrain instead of replacing the champion).

    """
    if isinstance(error, ModuleNotFoundError):
        return IncompatibleModel(
            "not_installed", f"its model needs {error.name!r}, which is not installed here"
        )
    # torch reports running out of memory as a RuntimeError: that may pass.
    if not isinstance(error, MISMATCH_TYPES) or "memory" in str(error).lower():
        return None
    message = _first_line(error)
    changed = differences(recorded, today) if recorded is not None else []
    if changed:
        what = ",".join(name for name, _ in changed)
        return IncompatibleModel(what, f"{'; '.join(s for _, s in changed)} ({message})")
    if KNOWN_MISMATCHES.search(str(error)):
        # Nothing recorded says what changed (a champion from before records existed, or a
        # change the record does not hold): the framework's own words say it does not fit.
        return IncompatibleModel("shape", f"its model does not fit today's data ({message})")
    return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2])  # torch puts the size that differs on the second line
    return f"{type(error).__name__}: {text[:300]}"
