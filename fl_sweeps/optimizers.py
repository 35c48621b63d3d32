"""TFF optimizers for the ``client_optimizer`` and ``server_optimizer`` config groups.

These are ``tff.learning.optimizers`` (not Keras) so the learning rate lives in the process state as a
hyperparameter and can be changed with ``set_hparams`` without rebuilding the process. Their settings have no
defaults here: ``conf/client_optimizer/`` and ``conf/server_optimizer/`` hold them.
"""

from __future__ import annotations

from typing import Any


def sgd(*, lr: float) -> Any:
    """Plain SGD with learning rate ``lr``."""
    import tensorflow_federated as tff

    return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def sgdm(*, lr: float, momentum: float) -> Any:
    """SGD with heavy-ball momentum."""
    import tensorflow_federated as tff

    return tff.learning.optimizers.build_sgdm(learning_rate=lr, momentum=momentum)


def adam(*, lr: float, beta_1: float, beta_2: float, epsilon: float) -> Any:
    """Adam."""
    import tensorflow_federated as tff

    return tff.learning.optimizers.build_adam(learning_rate=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
