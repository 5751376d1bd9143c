"""Helpers shared by the tests: paths and shrunk configs, small real datasets, trainable harness.

Test modules import from here and never from each other (nor from ``conftest.py``, which only
holds fixtures).
"""
