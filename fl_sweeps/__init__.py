"""fl-sweeps: Hydra-configured sweeps of compressed federated learning on TensorFlow Federated."""

import sys

# Keep Python's bytecode cache even where PYTHONDONTWRITEBYTECODE is set (as on these machines): without it every
# process compiles TensorFlow's and TFF's sources again, ~8 s of a ~10 s import. The first process writes the
# cache, the later ones read it. uv's `compile-bytecode` setting did this at install time, but makes every `uv run`
# compile the whole environment again and say so (astral-sh/uv#12202).
sys.dont_write_bytecode = False
