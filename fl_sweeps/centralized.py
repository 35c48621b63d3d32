"""The centralized reference of a sweep: the same model trained with Keras on all clients' pooled data.

TFF's tutorials contrast federated training with this: it is the accuracy a federated trial could reach if the
data were in one place, so a sweep records it once per study as the ceiling of its front. It makes as many passes
over the pooled examples as a federated trial makes on average over each client's (``rounds × local_epochs ×
clients_per_round / num_clients``, at least one), with Keras' Adam at its default learning rate in batches of
``BATCH_SIZE``, from the trial seed's initial weights. It trains on the training examples only and is evaluated
on the pooled validation and test examples, as ``eval.mode=centralized`` evaluates a trial.
"""

from __future__ import annotations

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from fl_sweeps.validation import validate
from fl_sweeps.workbench import Workbench

# Large batches: the ceiling is what centralized training reaches, not what the clients' batch size allows, and it
# costs a fraction of one federated trial (on the embedded digits, batches of 20 took as long as three trials).
BATCH_SIZE = 128


def centralized_epochs(cfg: DictConfig, num_clients: int) -> int:
    """Passes over the pooled data: those a federated trial makes over each client's data, on average."""
    t = cfg.training
    return max(1, round(t.rounds * t.local_epochs * t.clients_per_round / num_clients))


def train_centralized(cfg: DictConfig, workbench: Workbench) -> dict[str, float]:
    """Train ``cfg``'s model on the pooled training examples of its data set.

    Returns:
        Its accuracy on each split it can be evaluated on (``validation_accuracy`` when the data set holds
        validation examples, ``test_accuracy``) and ``eval_accuracy``, that of ``eval.split`` (the front's ceiling).
    """
    import tensorflow as tf

    validate(cfg)
    data = workbench.data(cfg)
    x = np.concatenate([client.x for client in data.train.values()])
    y = np.concatenate([client.y for client in data.train.values()])
    tf.keras.utils.set_random_seed(cfg.seed)
    model = instantiate(cfg.model)(data.input_shape, data.num_classes)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=centralized_epochs(cfg, data.num_clients),
        shuffle=True,
        verbose=0,
    )
    accuracies = {}
    for split in ("validation", "test"):
        if data.num_examples(split):
            examples = data.pooled(split)
            _, accuracy = model.evaluate(examples.x, examples.y, batch_size=256, verbose=0)
            accuracies[f"{split}_accuracy"] = float(accuracy)
    return {"eval_accuracy": accuracies[f"{cfg.eval.split}_accuracy"], **accuracies}
