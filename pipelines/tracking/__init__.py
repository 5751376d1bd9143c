"""MLflow tracking: the one door to MLflow, for writes and reads alike.

Only this package imports ``mlflow``; the tag, alias and artifact names it writes are in
:mod:`.schema`. Trainables never talk to MLflow; everything is written from the driver.

- :mod:`.sweep_run`: the experiment and the sweep's parent run (config, search space, best
  result, plots);
- :mod:`.callback`: a Tune callback that mirrors each trial as a nested child run;
- :mod:`.record`: what every trial records to be reproducible;
- :mod:`.models`: logging the best model, registering it as ``challenger``, loading it back;
- :mod:`.champion`: what a retrain records (stage, decision, ``champion`` alias);
- :mod:`.queries` and :mod:`.history`: reading runs, trials, histories and artifacts back.

Submodules are imported where they are used: reading a sweep needs neither Ray nor a framework.
"""
