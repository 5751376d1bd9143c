"""What one transform is: its function, what its strength means, and its random stream.

Each modality module (:mod:`~pipelines.augment.image`, :mod:`~pipelines.augment.text`,
:mod:`~pipelines.augment.audio`) declares its transforms as :class:`TransformSpec` entries next
to their functions; :mod:`~pipelines.augment.policy` gathers them. A new transform is one
function and one entry in its modality's table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

Transform = Callable[..., np.ndarray]


@dataclass(frozen=True)
class TransformSpec:
    """One transform: its function, its strength's meaning and range, and its random stream.

    Attributes:
        name: The name used in configs (``aug_<name>`` as a hyperparameter).
        modality: ``"image"``, ``"text"`` or ``"audio"``.
        meaning: The strength's meaning and unit, for error messages and the README.
        low: Smallest allowed strength.
        high: Largest allowed strength.
        stream: The transform's random stream id, fixed for good: the draws of a recorded trial
            depend on it, so a new transform takes a new number and none is ever reused or
            renumbered (a position in a table would shift when a transform is inserted).
        function: ``f(x, strength, rng, **context) -> x'`` on a batch (numpy in, numpy out).
        integer: Whether the strength is a whole number (pixels).
        identity: The strength that leaves data unchanged, or None when no value does.

    """

    name: str
    modality: str
    meaning: str
    low: float
    high: float
    stream: int
    function: Transform
    integer: bool = False
    identity: float | None = 0.0


def by_name(*tables: Iterable[TransformSpec]) -> dict[str, TransformSpec]:
    """Merge transform tables into one ``{name: spec}``, in table order.

    Raises:
        ValueError: If two transforms share a name or a stream id (a bug in a table).

    """
    merged: dict[str, TransformSpec] = {}
    streams: dict[int, str] = {}
    for spec in (spec for table in tables for spec in table):
        if spec.name in merged or spec.stream in streams:
            clash = spec.name if spec.name in merged else streams[spec.stream]
            raise ValueError(f"transform {spec.name!r} clashes with {clash!r} (name or stream)")
        merged[spec.name] = spec
        streams[spec.stream] = spec.name
    return merged
