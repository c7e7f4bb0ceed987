"""Sweeps: grids of `--grid` values (grid.py) and Optuna searches from a sweep file (file.py, study.py, trial.py)."""
