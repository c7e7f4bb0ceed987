"""Sweeps: one Optuna path for a sweep file (file.py) and for `--grid` flags (grid.py, an in-memory grid study):
opened and run in search.py, the study's storage and loop in study.py, each trial in trial.py, results in results.py."""
