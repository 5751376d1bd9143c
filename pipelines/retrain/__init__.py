"""Scheduled retraining: warm re-tunes judged on a holdout, promoted only when better.

- :mod:`.run` orchestrates one retrain (``tunepipe retrain``), :mod:`.rules` decides, and
  :mod:`.lock` keeps one retrain per experiment at a time;
- :mod:`.holdout` scores a recorded model on rows no trial saw;
- :mod:`.cron` reads cron expressions and :mod:`.runner` fires retrains on them
  (``tunepipe schedule``).
"""
