"""Scheduled retraining: warm re-tunes judged on a holdout, promoted only when better.

- :mod:`.run` orchestrates one retrain (``tunepipe retrain``), :mod:`.rules` decides, and
  :mod:`.lock` keeps one retrain per experiment at a time;
- :mod:`.judge` scores challenger and champion and records the decision; :mod:`.compat` tells a
  champion that can never score today's data from one that could not be reached;
- :mod:`.holdout` scores a recorded model on rows no trial saw;
- :mod:`.cron` reads cron expressions and :mod:`.runner` fires retrains on them
  (``tunepipe schedule``).
"""
