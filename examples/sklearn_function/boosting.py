"""A user's own training loop: scikit-learn's histogram gradient boosting, tuned by tunepipe.

``train(hp, ctx)`` runs its own loop and reports through ``ctx``: one report per round of
boosting (so ASHA can stop a weak trial early), several metrics each time, a checkpoint to
resume from after a retry, and the model handed to MLflow in the sklearn flavour. The logged
model takes the rows as ``ctx.arrays()`` gives them, so ``tunepipe retrain`` can judge it on
the holdout rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

#: The one type of this model that skops (MLflow's format for scikit-learn) does not trust by
#: default: its tree nodes.
TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def train(hp: dict[str, Any], ctx: Any) -> None:
    """Grow the model ``hp["epochs"]`` times by ``hp["trees_per_epoch"]`` trees, reporting."""
    x_train, y_train, x_val, y_val = ctx.arrays()
    per_epoch = int(hp.get("trees_per_epoch", 10))
    model = HistGradientBoostingRegressor(
        learning_rate=float(hp["learning_rate"]),
        max_leaf_nodes=int(hp["max_leaf_nodes"]),
        warm_start=True,
        early_stopping=False,
        random_state=ctx.seed,
    )
    start = 1
    resumed = ctx.checkpoint()
    if resumed is not None:  # a retried trial: resume after the last reported round
        start = json.loads((resumed / "state.json").read_text())["epoch"] + 1
    for epoch in range(start, int(hp["epochs"]) + 1):
        model.set_params(max_iter=per_epoch * epoch)
        model.fit(x_train, y_train)
        predictions = model.predict(x_val)
        # Targets arrive standardised: errors in the target's own units use its scale.
        errors = (predictions - y_val) * ctx.spec.target_std
        folder = Path(mkdtemp())
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
        ctx.log_model(model, "sklearn", skops_trusted_types=TRUSTED)
        ctx.report(
            {
                "val_rmse": float(np.sqrt(np.mean(errors**2))),
                "val_mae": float(np.mean(np.abs(errors))),
                **ctx.validation_metrics(y_val, predictions),  # val_r2, from the config
            },
            checkpoint=folder,
        )
