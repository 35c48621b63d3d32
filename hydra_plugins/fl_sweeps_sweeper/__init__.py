"""Hydra plugin entry for fl-sweeps' sweeper (Hydra loads sweepers only from the ``hydra_plugins`` package)."""
