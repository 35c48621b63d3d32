"""Ctrl-C or SIGTERM inside an MLflow store write still ends the trial's run KILLED (issue 36's SIGINT defect).

The signal is raised from inside the store's own SQL statement (a SQLAlchemy event), the window where a
``KeyboardInterrupt`` used to leave a sqlite transaction open: the run's closing writes then found the store locked,
failed after sqlite's busy timeout, and the run stayed RUNNING.
"""

from __future__ import annotations

import signal
import threading

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from fl_sweeps.held_signals import signals_held
from fl_sweeps.records import RoundRecord
from fl_sweeps.tracking import TrialRun


def _record(number: int) -> RoundRecord:
    return RoundRecord(
        round=number,
        train_loss=1.0,
        train_accuracy=0.5,
        eval_loss=1.0,
        eval_accuracy=0.5,
        broadcast_bits=10,
        aggregate_bits=10,
        cumulative_bits=20 * number,
        seconds=0.1,
    )


# Statements of the run's creation, its params, a round's metrics and its dataset: each write of a trial.
STATEMENTS = [
    "INSERT INTO runs",
    "INSERT INTO params",
    "INSERT INTO metrics",
    "UPDATE latest_metrics",
    "INSERT INTO inputs",
]


@pytest.mark.parametrize("statement", STATEMENTS)
def test_ctrl_c_inside_a_store_write_ends_the_run_killed(tmp_path, statement):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = TrialRun(tracking_uri=uri, experiment="signals", params={"seed": 0}, config_yaml="seed: 0\n")
    fired: list[str] = []

    def interrupt_once(connection, cursor, sql: str, *args) -> None:
        if not fired and sql.lstrip().upper().startswith(statement.upper()):
            fired.append(sql)
            signal.raise_signal(signal.SIGINT)  # Python's own handler: KeyboardInterrupt, as for a Ctrl-C

    event.listen(Engine, "after_cursor_execute", interrupt_once)
    try:
        with pytest.raises(KeyboardInterrupt), recorder:
            recorder.log_dataset(name="digits", config={"seed": 0}, description="digits", profile={})
            for number in (1, 2):
                recorder.log_round(_record(number))
    finally:
        event.remove(Engine, "after_cursor_execute", interrupt_once)
    assert fired, f"no {statement} statement ran"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("signals").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["trial_state"] == "killed"


def test_held_signals_reach_the_handler_in_place_once_each_after_the_block():
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, _frame: received.append(number))
    try:
        with signals_held():
            with signals_held():  # nested: the inner block's signals stay held until the outer one ends
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
            assert received == []
        assert received == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt), signals_held():
            signal.raise_signal(signal.SIGINT)
            assert True  # still running inside the block: the interrupt waits for its end
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_off_the_main_thread_the_block_runs_with_the_handlers_untouched():
    """Python runs signal handlers on the main thread only, and ``signal.signal`` refuses other threads."""
    seen: list[object] = []

    def block() -> None:
        with signals_held():
            seen.append(signal.getsignal(signal.SIGTERM))

    in_place = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=block)
    thread.start()
    thread.join()
    assert seen == [in_place]
