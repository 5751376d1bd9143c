"""Training losses and weight penalties for the Keras trainable, in TensorFlow ops.

Same keys and formulas as :mod:`trainables.torch_losses` (validated in
:mod:`trainables.loss_settings`): multi-class cross-entropy on logits, binary cross-entropy on
one logit, MSE, MAE and Huber on one output; every loss is the mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trainables.keras_runtime import tf
from trainables.loss_settings import huber_delta, loss_name
from trainables.protocol import DataSpec

#: ``(outputs, targets) -> mean loss over the batch`` (a scalar tensor).
LossFn = Callable[[Any, Any], Any]


def _cross_entropy(outputs: Any, targets: Any) -> Any:
    labels = tf.cast(targets, tf.int32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=outputs)
    return tf.reduce_mean(losses)


def _binary_cross_entropy(outputs: Any, targets: Any) -> Any:
    logits = tf.reshape(outputs, [-1])
    labels = tf.cast(targets, logits.dtype)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))


def _errors(outputs: Any, targets: Any) -> Any:
    # The model emits (n, 1); broadcasting that against (n,) targets would compare every pair.
    predictions = tf.reshape(outputs, [-1])
    return predictions - tf.cast(targets, predictions.dtype)


def _mse(outputs: Any, targets: Any) -> Any:
    return tf.reduce_mean(tf.square(_errors(outputs, targets)))


def _mae(outputs: Any, targets: Any) -> Any:
    return tf.reduce_mean(tf.abs(_errors(outputs, targets)))


def _huber(delta: float) -> LossFn:
    def loss(outputs: Any, targets: Any) -> Any:
        size = tf.abs(_errors(outputs, targets))
        quadratic = tf.minimum(size, delta)
        # 0.5 e^2 inside the delta band, delta * (|e| - 0.5 delta) outside: torch's huber_loss.
        return tf.reduce_mean(0.5 * tf.square(quadratic) + delta * (size - quadratic))

    return loss


def build_loss(hparams: Mapping[str, Any], data: DataSpec) -> LossFn:
    """Build the training loss named by ``hparams["loss"]``.

    Args:
        hparams: Uses ``loss`` and, for ``huber``, ``huber_delta``.
        data: Supplies the task and number of classes.

    Returns:
        A function ``(outputs, targets) -> mean loss`` over the batch.

    Raises:
        HyperparameterError: A loss that does not fit the task, or a bad ``huber_delta``.

    """
    name = loss_name(hparams, data)
    if name == "huber":
        return _huber(huber_delta(hparams))
    losses: dict[str, LossFn] = {
        "cross_entropy": _cross_entropy,
        "binary_cross_entropy": _binary_cross_entropy,
        "mse": _mse,
        "mae": _mae,
    }
    return losses[name]


def predicted_classes(outputs: Any) -> Any:
    """Return class indices: ``logit > 0`` for a one-logit (binary) model, else the argmax."""
    if outputs.shape[1] == 1:
        return tf.cast(outputs[:, 0] > 0, tf.int64)
    return tf.argmax(outputs, axis=1, output_type=tf.int64)


def weight_penalty(weights: Sequence[Any], l1: float, l2: float) -> Any | None:
    """Return ``l1 * sum(|w|) + l2 * sum(w**2)`` over ``weights``, or ``None`` when both are 0.

    Args:
        weights: The penalised variables (kernels, not biases).
        l1: Lasso strength.
        l2: Ridge strength.

    """
    if not weights or (l1 == 0 and l2 == 0):
        return None
    total = tf.constant(0.0, dtype=weights[0].dtype)
    if l1 > 0:
        total += l1 * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in weights])
    if l2 > 0:
        total += l2 * tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights])
    return total
