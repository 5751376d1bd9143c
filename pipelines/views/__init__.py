"""Views of a sweep as MLflow recorded it: report, plots, links and the MLflow UI.

Nothing here runs a sweep or imports Ray: a view reads a finished (or running) sweep through
:mod:`pipelines.tracking`, so it works for a sweep that ran on any machine.
"""
