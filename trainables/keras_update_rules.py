"""Keras optimisers whose update rules are written exactly as torch's.

Keras and torch ship the same five optimisers but write some of them differently, so the same
hyperparameter would mean something else in each framework:

* RMSprop and Adagrad: Keras adds ``eps`` *inside* the square root (``sqrt(v + eps)``), torch
  outside (``sqrt(v) + eps``). Inside, the default ``eps = 1e-7`` acts like ``3e-4`` outside,
  which visibly damps steps whose gradients are below about ``1e-3``.
* Adam: Keras adds ``eps`` to ``sqrt(v)``, torch to the bias-corrected ``sqrt(v_hat)``.
* SGD and RMSprop with momentum: Keras keeps ``lr`` inside the momentum buffer, torch applies
  it to the buffer at each step, so the two react differently when a schedule changes ``lr``.

The classes below override only ``update_step`` (the per-variable rule) and reuse the parent's
slot variables, so building, decoupled weight decay (applied by Keras before the update, as torch
does) and state handling stay Keras's own. The formulas are torch's ``torch.optim`` rules without
their rarely used options (dampening, centred RMSprop, amsgrad, lr decay of Adagrad).
"""

from __future__ import annotations

from typing import Any

from keras import ops

from trainables.keras_runtime import keras


class TorchSGD(keras.optimizers.SGD):  # type: ignore[misc]
    """SGD with torch's momentum buffer.

    ``b = momentum * b + g``; ``w -= lr * b``, or with Nesterov ``w -= lr * (g + momentum * b)``.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one step to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(lr, gradient))
            return
        buffer = self.momentums[self._get_variable_index(variable)]
        self.assign(buffer, ops.add(ops.multiply(self.momentum, buffer), gradient))
        step = ops.add(gradient, ops.multiply(self.momentum, buffer)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(lr, step))


class TorchRMSprop(keras.optimizers.RMSprop):  # type: ignore[misc]
    """RMSprop as torch writes it.

    ``v = rho * v + (1 - rho) * g**2``; ``d = g / (sqrt(v) + eps)``; ``w -= lr * d``, or with
    momentum ``b = momentum * b + d``, ``w -= lr * b``.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one step to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        velocity = self._velocities[index]
        self.assign(
            velocity,
            ops.add(
                ops.multiply(self.rho, velocity), ops.multiply(1 - self.rho, ops.square(gradient))
            ),
        )
        direction = ops.divide(gradient, ops.add(ops.sqrt(velocity), self.epsilon))
        if self.momentum > 0:
            buffer = self._momentums[index]
            self.assign(buffer, ops.add(ops.multiply(self.momentum, buffer), direction))
            direction = buffer
        self.assign_sub(variable, ops.multiply(lr, direction))


class TorchAdagrad(keras.optimizers.Adagrad):  # type: ignore[misc]
    """Adagrad as torch writes it: ``s += g**2``; ``w -= lr * g / (sqrt(s) + eps)``."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one step to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        accumulator = self._accumulators[self._get_variable_index(variable)]
        self.assign_add(accumulator, ops.square(gradient))
        denominator = ops.add(ops.sqrt(accumulator), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(lr, gradient), denominator))


class TorchAdam(keras.optimizers.Adam):  # type: ignore[misc]
    """Adam as torch writes it, ``eps`` added to the bias-corrected root.

    ``w -= lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Apply one step to ``variable``."""
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        correction1 = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step)
        correction2 = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        denominator = ops.add(ops.sqrt(ops.divide(v, correction2)), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(lr / correction1, m), denominator))
