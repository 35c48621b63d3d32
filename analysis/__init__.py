"""Analysis of fl-sweeps results from MLflow alone: trials as DataFrames, the Pareto front, plots and a report.

Nothing here imports the training code (``fl_sweeps``): it reads what any MLflow tracking store holds.
"""

import sys

# As in fl_sweeps/__init__.py: keep the bytecode cache of pandas, matplotlib and MLflow where
# PYTHONDONTWRITEBYTECODE is set, so that only the first report compiles their sources.
sys.dont_write_bytecode = False
