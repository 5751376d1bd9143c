"""Optimisers for the Keras trainable, built from the same hyperparameters as torch's.

Keras 3 optimisers already apply ``weight_decay`` decoupled and before the update
(``w <- w * (1 - lr * wd)``) for every update rule, exactly as :mod:`trainables.torch_optim`
does, so only the exclusion of biases is configured here. What this module adds, as the torch
one does:

* learning-rate control from outside (:meth:`KerasTrainingOptimizer.set_lr`) for epoch
  schedules;
* hypergradient descent on the learning rate, with the same unit-rate construction as
  :class:`trainables.torch_optim.HypergradientLR`;
* state save and load that keeps this trial's own hyperparameters, for population-based
  training.

The update rules themselves are torch's, written for Keras in
:mod:`trainables.keras_update_rules`: Keras's built-in RMSprop, Adagrad and Adam place ``eps``
elsewhere, and its momentum buffers hold ``lr``, so the same key would otherwise mean something
slightly different in each framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainables.keras_runtime import tf
from trainables.keras_update_rules import TorchAdagrad, TorchAdam, TorchRMSprop, TorchSGD
from trainables.optimizer_settings import OptimizerSettings, checked_lr, optimizer_settings

_HYPER_PREFIX = "hypergradient/"


def _keras_optimizer(settings: OptimizerSettings, lr: float) -> Any:
    options = settings.options
    # None, not 0: Keras then skips the decay ops entirely.
    decay = settings.weight_decay or None
    if settings.name == "sgd":
        return TorchSGD(
            lr, momentum=options["momentum"], nesterov=options["nesterov"], weight_decay=decay
        )
    if settings.name == "rmsprop":
        return TorchRMSprop(
            lr,
            rho=options["rho"],
            momentum=options["momentum"],
            epsilon=options["eps"],
            weight_decay=decay,
        )
    if settings.name == "adagrad":
        return TorchAdagrad(
            lr,
            initial_accumulator_value=options["initial_accumulator_value"],
            epsilon=options["eps"],
            weight_decay=decay,
        )
    # adam and adamw: Keras's AdamW is Adam with a required weight_decay, the same update.
    return TorchAdam(
        lr,
        beta_1=options["beta1"],
        beta_2=options["beta2"],
        epsilon=options["eps"],
        weight_decay=decay,
    )


class KerasTrainingOptimizer:
    """A Keras optimiser with decay on weights only, lr control and hypergradient descent.

    Call :meth:`apply` inside the compiled training step. Under hypergradient descent the Keras
    optimiser runs at ``learning_rate = 1`` and this class owns the rate (read :attr:`lr`).

    Attributes:
        optimizer: The wrapped ``keras.optimizers.Optimizer``, built on the variables.
        settings: The validated hyperparameters it was built from.

    """

    def __init__(
        self, hparams: Mapping[str, Any], weights: Sequence[Any], others: Sequence[Any] = ()
    ) -> None:
        """Build the optimiser for ``weights`` (decayed) and ``others`` (never decayed).

        Raises:
            HyperparameterError: See :func:`trainables.optimizer_settings.optimizer_settings`.

        """
        self.settings = optimizer_settings(hparams)
        self.variables = [*weights, *others]
        hyper = self.settings.hyper_lr is not None
        self.optimizer = _keras_optimizer(self.settings, 1.0 if hyper else self.settings.lr)
        if self.settings.weight_decay and others:
            self.optimizer.exclude_from_weight_decay(var_list=list(others))
        self.optimizer.build(self.variables)
        # The rate as set, in float64: Keras stores it as float32 (0.01 -> 0.0099999998), and
        # the logged lr must read the same in every framework.
        self._lr = self.settings.lr
        self._rate: Any = None
        if hyper:
            # float64: per-step increments can be far below float32's resolution of the rate.
            self._rate = tf.Variable(self.settings.lr, dtype=tf.float64, trainable=False)
            self._start = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
            self._direction = [
                tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables
            ]

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return float(self._rate.numpy()) if self._rate is not None else self._lr

    def set_lr(self, lr: float) -> None:
        """Use ``lr`` from the next step on (under hypergradient descent: adapt from ``lr``).

        Raises:
            ValueError: If ``lr`` is negative or not finite.

        """
        lr = checked_lr(lr)
        if self._rate is not None:
            self._rate.assign(lr)
        else:
            self._lr = lr
            self.optimizer.learning_rate = lr

    def apply(self, grads: Sequence[Any]) -> None:
        """Take one step from ``grads`` (one per variable, in :attr:`variables` order).

        Traceable: call it inside ``tf.function``.
        """
        if self._rate is None:
            self.optimizer.apply(list(grads), self.variables)
            return
        # lr_t = max(0, lr_{t-1} - hyper_lr * g_t . d_{t-1}); see torch_optim.HypergradientLR.
        dots = [tf.reduce_sum(g * d) for g, d in zip(grads, self._direction, strict=True)]
        hypergradient = tf.cast(tf.add_n(dots), tf.float64)
        assert self.settings.hyper_lr is not None
        adapted = self._rate - self.settings.hyper_lr * hypergradient
        self._rate.assign(tf.maximum(tf.constant(0.0, tf.float64), adapted))
        for start, variable in zip(self._start, self.variables, strict=True):
            start.assign(variable)
        self.optimizer.apply(list(grads), self.variables)  # the step at unit rate
        for start, direction, variable in zip(
            self._start, self._direction, self.variables, strict=True
        ):
            direction.assign(variable - start)
            variable.assign(start + tf.cast(self._rate, variable.dtype) * direction)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Return the optimiser's state (and the rate's, under hypergradient) as named arrays."""
        state = {f"optimizer/{i}": np.asarray(v.numpy()) for i, v in enumerate(self._slots())}
        if self._rate is not None:
            state[_HYPER_PREFIX + "lr"] = np.asarray(self._rate.numpy())
            state[_HYPER_PREFIX + "base_lr"] = np.asarray(self.settings.lr)
            for i, direction in enumerate(self._direction):
                state[f"{_HYPER_PREFIX}direction/{i}"] = np.asarray(direction.numpy())
        return state

    def load_state_arrays(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_arrays`'s output, keeping this trial's hyperparameters.

        The moments, accumulators and step count come from the checkpoint; the learning rate is
        this trial's ``lr``, as in :meth:`trainables.torch_optim.TrainingOptimizer.load_state_dict`
        (population-based training resumes trials from another trial's checkpoint with mutated
        values). Under hypergradient the adapted rate is kept only if it grew from the same
        ``lr``.

        Raises:
            ValueError: If the saved state belongs to a different optimiser or model.

        """
        slots = self._slots()
        saved = sorted(
            (k for k in state if k.startswith("optimizer/")), key=lambda k: int(k.split("/")[1])
        )
        if len(saved) != len(slots):
            raise ValueError(
                f"the checkpoint's optimizer has {len(saved)} state variables, this "
                f"{self.settings.name} optimizer has {len(slots)}"
            )
        for variable, key in zip(slots, saved, strict=True):
            variable.assign(state[key])
        if self._rate is None:
            self.set_lr(self.settings.lr)
            return
        for i, direction in enumerate(self._direction):
            direction.assign(state[f"{_HYPER_PREFIX}direction/{i}"])
        same_start = float(state[_HYPER_PREFIX + "base_lr"]) == self.settings.lr
        self._rate.assign(float(state[_HYPER_PREFIX + "lr"]) if same_start else self.settings.lr)

    def _slots(self) -> list[Any]:
        # The step counter and the moments; the learning-rate variable is this trial's own.
        lr_variable = self.optimizer._learning_rate
        return [v for v in self.optimizer.variables if v is not lr_variable]
