"""Analysis of fl-sweeps results from MLflow alone: trials as DataFrames, the Pareto front, plots and a report.

Nothing here imports the training code (``fl_sweeps``): it reads what any MLflow tracking store holds.
"""
