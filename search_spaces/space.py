"""The validated search space: named parameter specs in file order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from search_spaces.spec import GridSpec, ParamSpec


class SearchSpace(BaseModel):
    """A validated search space, as loaded from one file.

    Attributes:
        source: The file it came from (used in error messages).
        params: Parameter name -> spec, ordered as in the file.

    """

    model_config = ConfigDict(frozen=True)

    source: str
    params: dict[str, ParamSpec]

    def names(self) -> list[str]:
        """Return the parameter names in file order."""
        return list(self.params)

    def has_grid(self) -> bool:
        """Return whether any parameter is ``type: grid`` (it multiplies the trial count)."""
        return any(isinstance(spec, GridSpec) for spec in self.params.values())

    def is_conditional(self) -> bool:
        """Return whether any parameter has a ``when`` clause."""
        return any(spec.when is not None for spec in self.params.values())

    def children(self, parent: str) -> list[str]:
        """Return the parameters whose ``when`` names ``parent``, in file order."""
        return [
            name
            for name, spec in self.params.items()
            if spec.when is not None and spec.when.parent == parent
        ]

    def is_active(self, name: str, chosen: Mapping[str, Any]) -> bool:
        """Return whether parameter ``name`` is active given the *active* values chosen so far.

        ``chosen`` must hold only active parameters (as a searcher builds a config in file
        order): an inactive parent is then simply absent, which makes its children inactive.
        """
        when = self.params[name].when
        return when is None or (when.parent in chosen and when.matches(chosen[when.parent]))

    def active(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``config`` restricted to the parameters active under its own values.

        Keys that are not parameters of this space (fixed hyperparameters, ``seed``, ...) are
        kept. This is what a trial receives and what is logged, whichever searcher sampled
        ``config``: random search samples every parameter and relies on this to drop the
        inactive ones.

        Args:
            config: A flat ``{name: value}`` trial config.

        Returns:
            A new dict, in the order of ``config``.

        """
        chosen: dict[str, Any] = {}
        # One pass in file order suffices: parents are declared before their children.
        for name in self.params:
            if name in config and self.is_active(name, chosen):
                chosen[name] = config[name]
        return {k: v for k, v in config.items() if k in chosen or k not in self.params}

    def sample_defaults(self) -> dict[str, Any]:
        """Return one valid value per parameter, for dry runs without a searcher.

        Floats take the midpoint (geometric mean on a log scale), ints the rounded midpoint,
        categorical and grid parameters their first value, constants their value. Only the
        parameters active under those values are returned.
        """
        return self.active({name: spec.default() for name, spec in self.params.items()})
