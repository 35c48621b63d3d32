"""Multi-objective Optuna sweeps (accuracy up, bits down) with pruning, resume and an MLflow parent run."""
