"""Optimisers for the torch trainable, built from flat hyperparameters.

:class:`TrainingOptimizer` wraps a ``torch.optim`` optimiser and adds what torch does not offer
uniformly:

* decoupled weight decay for every update rule, not only AdamW (torch's ``weight_decay`` on SGD,
  Adam, ... is a coupled L2 penalty, which adaptive rules rescale). It is applied within each
  step, before the update, exactly as AdamW does, so ``adam`` + ``weight_decay`` is AdamW;
* learning-rate control from outside (:meth:`TrainingOptimizer.set_lr`) for epoch schedules;
* hypergradient descent on the learning rate (:class:`HypergradientLR`);
* re-applying the trial's own hyperparameters after a checkpoint is loaded, which population
  based training needs: it resumes a trial from another trial's checkpoint with mutated values.

The hyperparameters and their defaults are documented and validated in
:mod:`trainables.optimizer_settings`, shared with the Keras trainable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainables.optimizer_settings import (
    OPTIMIZER_HPARAMS,
    OptimizerSettings,
    checked_lr,
    flag_hparam,
    optimizer_settings,
)

__all__ = [
    "OPTIMIZER_HPARAMS",
    "HypergradientLR",
    "TrainingOptimizer",
    "decay_weights",
    "flag_hparam",
    "optimizer_settings",
    "torch_options",
]

# Any: the classes take different keyword options, which one base type cannot describe.
_CLASSES: dict[str, Any] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def torch_options(settings: OptimizerSettings) -> dict[str, Any]:
    """Return the torch param-group options other than ``lr`` and ``weight_decay``.

    Torch names two of them differently: ``alpha`` is ``rho``, ``betas`` is
    ``(beta1, beta2)``.
    """
    options = dict(settings.options)
    if "rho" in options:
        options["alpha"] = options.pop("rho")
    if "beta1" in options:
        options["betas"] = (options.pop("beta1"), options.pop("beta2"))
    return options


@torch.no_grad()
def decay_weights(weights: Sequence[torch.Tensor], lr: float, weight_decay: float) -> None:
    """Apply decoupled weight decay in place: ``w <- w * (1 - lr * weight_decay)``.

    The same expression as ``torch.optim.AdamW``, so ``adam`` with ``weight_decay`` matches
    ``adamw`` exactly.
    """
    if weight_decay == 0:
        return
    factor = 1.0 - lr * weight_decay
    for w in weights:
        w.mul_(factor)


class HypergradientLR:
    """Hypergradient descent on the learning rate (Baydin et al., 2018), for any update rule.

    Every supported rule moves the parameters by ``lr * d`` where the direction ``d`` does not
    depend on ``lr`` (for SGD ``d = -g``; for Adam ``d = -m_hat / (sqrt(v_hat) + eps)``). The
    loss after step ``t - 1`` therefore depends on ``lr_{t-1}`` through
    ``theta_{t-1} = theta_{t-2} + lr_{t-1} * d_{t-1}``, with derivative ``g_t . d_{t-1}``, and
    one gradient step on the learning rate, taken before each parameter step, is::

        lr_t = max(0, lr_{t-1} - hyper_lr * g_t . d_{t-1})
        d_{t-1} = (theta_{t-1} - theta_{t-2}) / lr_{t-1}

    For plain SGD this is ``lr_t = lr_{t-1} + hyper_lr * g_t . g_{t-1}``: the rate grows while
    successive gradients agree and shrinks when they turn against each other (overshooting).
    On the first step ``d`` is zero and the rate is left unchanged.

    The wrapped update runs at unit rate, so ``d`` is measured directly as the change it makes,
    never divided by a rate that may have reached 0 (from which the rate can recover), and the
    parameters are then placed at ``theta_{t-1} + lr_t * d_t``. The rate is a tensor on the
    parameters' device: no step waits for a device-to-host copy. Costs two extra copies of the
    parameters.

    Attributes:
        lr: The current rate, a float64 0-dim tensor on the parameters' device.
        base_lr: The ``lr`` hyperparameter the adaptation started from.
        hyper_lr: The step size of the descent on the rate.

    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float, hyper_lr: float) -> None:
        self.params = list(params)
        self.hyper_lr = hyper_lr
        self.base_lr = lr
        # float64: the per-step increments (hyper_lr * g.d) can be far below float32's
        # resolution of a rate around 1e-3.
        self.lr = torch.tensor(lr, dtype=torch.float64, device=self.params[0].device)
        self._direction = [torch.zeros_like(p) for p in self.params]
        self._start = [torch.empty_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, unit_step: Callable[[], None]) -> None:
        """Adapt the rate, then take one step of ``unit_step`` (the update at lr 1) scaled by it.

        Args:
            unit_step: Updates the parameters in place as the base rule would with lr = 1.

        """
        self._adapt()
        for start, p in zip(self._start, self.params, strict=True):
            start.copy_(p)
        unit_step()
        for start, direction, p in zip(self._start, self._direction, self.params, strict=True):
            torch.sub(p, start, out=direction)
            p.copy_(start).addcmul_(direction, self.lr.to(p.dtype))

    def _adapt(self) -> None:
        dots = [
            torch.dot(p.grad.reshape(-1), d.reshape(-1))
            for p, d in zip(self.params, self._direction, strict=True)
            if p.grad is not None
        ]
        if dots:
            hypergradient = torch.stack(dots).sum().to(self.lr.dtype)
            self.lr.sub_(self.hyper_lr * hypergradient).clamp_(min=0.0)

    def set_lr(self, lr: float) -> None:
        """Continue the adaptation from ``lr``."""
        self.lr.fill_(lr)

    def state_dict(self) -> dict[str, Any]:
        """Return the rate, its starting hyperparameter and the last direction."""
        return {"lr": self.lr, "base_lr": self.base_lr, "direction": self._direction}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, keeping this trial's ``lr`` hyperparameter.

        The adapted rate is kept only when the checkpoint grew from the same ``lr``
        hyperparameter (a plain resume, or a PBT exploit that left ``lr`` alone); a mutated
        ``lr`` restarts the adaptation from the new value.
        """
        for direction, saved in zip(self._direction, state["direction"], strict=True):
            direction.copy_(saved)
        if float(state["base_lr"]) == self.base_lr:
            self.lr.copy_(state["lr"])
        else:
            self.lr.fill_(self.base_lr)


class TrainingOptimizer:
    """A torch optimiser plus decoupled weight decay, lr control and hypergradient descent.

    Weights (tensors with more than one dimension) and the other parameters (biases, norms) go
    into separate param groups so that decay touches weights only.

    Under hypergradient descent the param groups hold ``lr = 1``: the torch optimiser computes
    the unit-rate step and :class:`HypergradientLR` owns the rate (read :attr:`lr`).

    Attributes:
        optimizer: The wrapped ``torch.optim`` optimiser.
        settings: The validated hyperparameters it was built from.

    """

    def __init__(
        self,
        hparams: Mapping[str, Any],
        weights: Sequence[nn.Parameter],
        others: Sequence[nn.Parameter] = (),
    ) -> None:
        """Build the optimiser for ``weights`` (decayed) and ``others`` (never decayed).

        Raises:
            ValueError: See :func:`optimizer_settings`.

        """
        self.settings = optimizer_settings(hparams)
        self._options = torch_options(self.settings)
        self._weights = list(weights)
        # AdamW decays inside its own step, in the weights group only; the others get it here.
        adamw = self.settings.name == "adamw"
        self._manual_decay = 0.0 if adamw else self.settings.weight_decay
        weights_decay = self.settings.weight_decay if adamw else 0.0
        pairs = [(list(g), d) for g, d in ((weights, weights_decay), (others, 0.0)) if g]
        groups = [group for group, _ in pairs]
        self._group_decay = [decay for _, decay in pairs]
        # Built with the options because some act at construction (Adagrad's accumulator).
        self.optimizer = _CLASSES[self.settings.name](
            [{"params": g} for g in groups], lr=self.settings.lr, **self._options
        )
        self._lr = self.settings.lr
        self._hyper = None
        if self.settings.hyper_lr is not None:
            params = [p for group in groups for p in group]
            self._hyper = HypergradientLR(params, self.settings.lr, self.settings.hyper_lr)
        self.apply_hparams()

    @property
    def lr(self) -> float:
        """The current learning rate (one device sync under hypergradient descent)."""
        return float(self._hyper.lr) if self._hyper is not None else self._lr

    def set_lr(self, lr: float) -> None:
        """Use ``lr`` from the next step on (under hypergradient descent: adapt from ``lr``).

        Raises:
            ValueError: If ``lr`` is negative or not finite.

        """
        lr = checked_lr(lr)
        if self._hyper is not None:
            self._hyper.set_lr(lr)
            return
        self._lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def apply_hparams(self) -> None:
        """Write this trial's hyperparameters (and current lr) into every param group."""
        group_lr = 1.0 if self._hyper is not None else self._lr
        for group, decay in zip(self.optimizer.param_groups, self._group_decay, strict=True):
            group.update(self._options)
            # Torch's own (coupled) decay stays off except in AdamW, where it is decoupled.
            group.update(lr=group_lr, weight_decay=decay)

    def zero_grad(self) -> None:
        """Drop the gradients (as ``None``, which skips a memset)."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Take one optimisation step from the current gradients."""
        if self._hyper is None:
            self._update(self._lr)
        else:
            self._hyper.step(lambda: self._update(1.0))

    def _update(self, lr: float) -> None:
        # Decay before the step, as AdamW does: w_t = w(1 - lr*wd) + lr*d, which is linear in
        # lr (as hypergradient descent needs) and, under plain SGD, equals an L2 penalty of
        # wd/2 exactly.
        decay_weights(self._weights, lr, self._manual_decay)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """Return the optimiser state and, under hypergradient descent, the rate's state."""
        hyper = self._hyper.state_dict() if self._hyper is not None else None
        return {"optimizer": self.optimizer.state_dict(), "hypergradient": hyper}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, then re-apply this trial's hyperparameters.

        ``torch.optim.Optimizer.load_state_dict`` also restores the saved param-group values
        (lr, momentum, betas, ...). PBT resumes a trial from another trial's checkpoint with
        mutated hyperparameters, so those must be overwritten by the current ones; the moment
        estimates and momentum buffers are kept.
        """
        self.optimizer.load_state_dict(state["optimizer"])
        self._lr = self.settings.lr
        if self._hyper is not None and state.get("hypergradient"):
            self._hyper.load_state_dict(state["hypergradient"])
        elif self._hyper is not None:
            self._hyper.set_lr(self.settings.lr)
        self.apply_hparams()
