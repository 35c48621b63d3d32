"""Run one federated trial: build the compressed FedAvg process, train round by round, evaluate, yield records.

The trainer knows nothing of Hydra or MLflow: it takes built objects and yields one ``RoundRecord`` per round.
``process`` builds the TFF learning process (``BuiltProcess``), ``evaluation`` evaluates its weights
(``CentralizedEvaluator`` or ``FederatedEvaluator``), ``rounds`` runs the round loop (``FederatedTrial``),
``settings`` holds what a run may change, ``client_states`` what clients keep across rounds and ``run_checkpoint``
where a run stands after a round (to go on from it in another process).
"""

from fl_sweeps.records import RoundRecord
from fl_sweeps.trainer.client_states import ClientStates
from fl_sweeps.trainer.evaluation import (
    EVALUATORS,
    CentralizedEvaluator,
    Evaluator,
    FederatedEvaluator,
    build_evaluator,
)
from fl_sweeps.trainer.process import BuiltProcess
from fl_sweeps.trainer.rounds import FederatedTrial, check_finite
from fl_sweeps.trainer.run_checkpoint import RunCheckpoint
from fl_sweeps.trainer.settings import RunSettings, TrainingSettings

__all__ = [
    "EVALUATORS",
    "BuiltProcess",
    "CentralizedEvaluator",
    "ClientStates",
    "Evaluator",
    "FederatedEvaluator",
    "FederatedTrial",
    "RoundRecord",
    "RunCheckpoint",
    "RunSettings",
    "TrainingSettings",
    "build_evaluator",
    "check_finite",
]
