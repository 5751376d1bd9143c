"""Numeric precision and graph compilation, validated once for every framework.

``precision`` [fp32] is the arithmetic of the forward and backward passes: ``fp32``; ``bf16``
(bfloat16 compute, float32 weights: the range of float32, no loss scaling needed); ``fp16``
(float16 compute, float32 weights, the loss scaled so small gradients do not flush to zero).
Torch runs it with ``torch.autocast`` (plus a ``GradScaler`` for fp16), Keras with its
``mixed_bfloat16`` / ``mixed_float16`` policies (plus a ``LossScaleOptimizer`` for fp16).
Weights, optimiser state, checkpoints and reported metrics stay float32 in every case.

``compile`` [false] compiles the model's computation: ``torch.compile`` in torch, XLA
(``jit_compile``) for the Keras train and evaluation steps.

fp16 needs a CUDA GPU (no CPU kernel set is worth it); bf16 needs a GPU that has bf16 units
(compute capability 8.0 and later) or the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import HyperparameterError

PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"
#: Hyperparameter keys read by this module.
PRECISION_HPARAMS: frozenset[str] = frozenset({"precision", "compile"})


@dataclass(frozen=True)
class PrecisionSettings:
    """A trial's validated precision and compilation.

    Attributes:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        compile: Whether the model's computation is compiled.

    """

    precision: str = DEFAULT_PRECISION
    compile: bool = False

    @property
    def mixed(self) -> bool:
        """Whether the passes run in a 16-bit type."""
        return self.precision != "fp32"

    @property
    def scales_loss(self) -> bool:
        """Whether the loss is scaled (fp16's narrow range needs it, bf16's does not)."""
        return self.precision == "fp16"


def precision_settings(hparams: Mapping[str, Any]) -> PrecisionSettings:
    """Validate ``precision`` and ``compile``.

    Raises:
        HyperparameterError: An unknown precision or a ``compile`` that is not a boolean.

    """
    precision = hparams.get("precision", DEFAULT_PRECISION)
    if precision not in PRECISIONS:
        raise HyperparameterError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
            key="precision",
            fix="use fp32, bf16 (CPU or a recent GPU) or fp16 (CUDA GPUs)",
        )
    compiled = hparams.get("compile", False)
    if not isinstance(compiled, bool):
        raise HyperparameterError(
            f"compile must be true or false, got {compiled!r}",
            key="compile",
            fix="use compile: true or compile: false",
        )
    return PrecisionSettings(str(precision), compiled)


def check_device(settings: PrecisionSettings, device: str, *, bf16_ok: bool) -> None:
    """Refuse a precision the trial's device cannot run.

    Args:
        settings: The trial's precision.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        bf16_ok: Whether the device has bfloat16 arithmetic (asked of the framework).

    Raises:
        HyperparameterError: fp16 off a GPU, or bf16 on a GPU without it.

    """
    on_gpu = device.startswith("cuda")
    if settings.precision == "fp16" and not on_gpu:
        raise HyperparameterError(
            "precision fp16 needs a CUDA GPU and this trial runs on the CPU",
            key="precision",
            fix="give trials a GPU (resources.gpu) or use precision: bf16 on the CPU",
        )
    if settings.precision == "bf16" and on_gpu and not bf16_ok:
        raise HyperparameterError(
            "precision bf16 needs a GPU with bfloat16 units (compute capability 8.0+)",
            key="precision",
            fix="use precision: fp16 on this GPU",
        )
