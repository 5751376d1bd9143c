"""Running a sweep: plan it from the config, assemble the Tuner, run it, keep the best.

- :mod:`.plan` checks every rule that spans config sections and plans the sweep, before any
  cluster work (:mod:`.checks` holds the rules);
- :mod:`.strategies` is the table of searchers and schedulers, each with its traits;
- :mod:`.warm_start` and :mod:`.extend` turn earlier trials into a head start;
- :mod:`.tuner` assembles Ray Tune's Tuner, :mod:`.run` runs it end to end and :mod:`.finish`
  picks and records the best (:mod:`.best`);
- :mod:`.cluster` reaches Ray, :mod:`.progress` shows a live view, :mod:`.dry_run` and
  :mod:`.replay` train outside Tune (one step to validate; one recorded trial to reproduce).
"""
