"""The validated search space: named parameter specs in file order."""

from __future__ import annotations

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

    def to_tune(self, method: str) -> dict[str, Any]:
        """Return the Ray Tune ``param_space`` for searcher ``method``.

        Args:
            method: Searcher name, e.g. ``"random"``, ``"grid"`` or ``"tpe"``.

        Returns:
            Parameter name -> Ray Tune domain, ``grid_search`` dict or plain constant.

        Raises:
            SearchSpaceError: If a parameter cannot be searched with ``method``.

        """
        # Imported here because convert imports this module for its type hints.
        from search_spaces.convert import to_tune_domains

        return to_tune_domains(self, method)

    def sample_defaults(self) -> dict[str, Any]:
        """Return one valid value per parameter, for dry runs without a searcher.

        Floats take the midpoint (geometric mean on a log scale), ints the rounded midpoint,
        categorical and grid parameters their first value, constants their value.
        """
        return {name: spec.default() for name, spec in self.params.items()}
