"""Range and consistency checks on the composed config, run before TensorFlow is imported.

Types, unknown keys and the allowed values of enums (``eval.mode``, ``data.partition``, ``rounding``) are already
checked by the schemas (``fl_sweeps.schema``) when Hydra composes the config; this adds what a type cannot say:
bits 1..16, positive learning rates, no more clients per round than clients, and so on. Each range is listed once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fl_sweeps.errors import ConfigError

Check = tuple[Callable[[Any], bool], str]

_INT_AT_LEAST_1: Check = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
_POSITIVE: Check = (lambda v: isinstance(v, (int, float)) and 0 < v < float("inf"), "a finite number > 0")
_UNIT_INTERVAL_OPEN: Check = (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)")

RULES: dict[str, Check] = {
    "training.rounds": _INT_AT_LEAST_1,
    "training.clients_per_round": _INT_AT_LEAST_1,
    "training.local_epochs": _INT_AT_LEAST_1,
    "training.batch_size": _INT_AT_LEAST_1,
    "training.shuffle_buffer": _INT_AT_LEAST_1,
    "eval.every": _INT_AT_LEAST_1,
    "data.num_clients": _INT_AT_LEAST_1,
    "data.shards_per_client": _INT_AT_LEAST_1,
    "data.max_clients": (lambda v: v is None or (isinstance(v, int) and v >= 1), "null or an integer >= 1"),
    "data.alpha": _POSITIVE,
    "data.test_fraction": (lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)"),
    "data.validation_fraction": _UNIT_INTERVAL_OPEN,
    "model.dense_units": _INT_AT_LEAST_1,
    "model.filters": (
        lambda v: len(v) >= 1 and all(isinstance(n, int) and n >= 1 for n in v),
        "a non-empty list of integers >= 1",
    ),
    "model.hidden_units": (lambda v: all(isinstance(n, int) and n >= 1 for n in v), "a list of integers >= 1"),
    "tff_worker_max_growth": (
        lambda v: v is None or (isinstance(v, (int, float)) and 0 <= v < float("inf")),
        "null (never restart the TFF worker) or a number >= 0",
    ),
    "algorithm.clip_norm": (
        lambda v: v is None or (isinstance(v, (int, float)) and 0 < v < float("inf")),
        "null (no clipping) or a number > 0",
    ),
}
for _side in ("client_optimizer", "server_optimizer"):
    RULES[f"{_side}.lr"] = _POSITIVE
    RULES[f"{_side}.momentum"] = _UNIT_INTERVAL_OPEN
    RULES[f"{_side}.beta_1"] = _UNIT_INTERVAL_OPEN
    RULES[f"{_side}.beta_2"] = _UNIT_INTERVAL_OPEN
    RULES[f"{_side}.epsilon"] = _POSITIVE
# ---- Compression options (helper D, issue 18). ----
for _side in ("broadcast_encoder", "aggregate_encoder"):
    RULES[f"{_side}.bits"] = (lambda v: isinstance(v, int) and 1 <= v <= 16, "an integer from 1 to 16")
    RULES[f"{_side}.threshold"] = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    RULES[f"{_side}.fraction"] = (
        lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
        "a number in (0, 1]",
    )
    RULES[f"{_side}.levels"] = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    # product_quantization (issue 39): indices of at most 16 bits, the packing stage's widest symbol.
    RULES[f"{_side}.codewords"] = (
        lambda v: isinstance(v, int) and 2 <= v <= 65536,
        "an integer from 2 to 65536 (2^16)",
    )
    RULES[f"{_side}.dim"] = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
    RULES[f"{_side}.iterations"] = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
# ---- Count sketch (issue 39): aggregate_encoder=count_sketch's sketch sizes and server momentum. ----
RULES["aggregate_encoder.rows"] = (lambda v: isinstance(v, int) and 1 <= v <= 16, "an integer from 1 to 16")
RULES["aggregate_encoder.columns"] = (lambda v: isinstance(v, int) and 1 <= v <= 2**24, "an integer from 1 to 2^24")
RULES["aggregate_encoder.k_fraction"] = (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "a number in (0, 1]")
RULES["aggregate_encoder.momentum"] = _UNIT_INTERVAL_OPEN
# ---- The anchor catch-up (issue 39): how many models the server keeps, and how often it makes one. ----
RULES["broadcast_encoder.anchors"] = (
    lambda v: isinstance(v, int) and v >= 1,
    "an integer >= 1 (models the server keeps)",
)
RULES["broadcast_encoder.anchor_every"] = (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1 (rounds)")
RULES["aggregate_encoder.rank"] = _INT_AT_LEAST_1  # PowerSGD (issue 39); the model's sides: low_rank.check_shapes
# ---- Compression schedules (issue 19); their values follow the rule of the setting they schedule. ----
RULES["schedule.patience"] = _INT_AT_LEAST_1
RULES["schedule.min_improvement"] = _UNIT_INTERVAL_OPEN
SCHEDULABLE = ("bits", "fraction", "levels")  # the settings a schedule can change (schema.ScheduledSetting)


def check_entropy_coding(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` if ``entropy_coding`` is on for an option with nothing to code (no stage of it takes
    ``entropy_coding``: the symbol-packing stage and top-k's positions do)."""
    for side in ("broadcast_encoder", "aggregate_encoder"):
        if OmegaConf.select(cfg, f"{side}.entropy_coding", default=False) is True:
            stages = OmegaConf.select(cfg, f"{side}.stages", default=[]) or []
            if not any("entropy_coding" in stage for stage in stages):
                raise ConfigError(
                    f"{side}.entropy_coding=true is not allowed for {side}={cfg[side].get('name')}: it neither "
                    "quantizes nor sends positions; use entropy_coding with uniform, hadamard, sign, terngrad, qsgd, "
                    "drive, nonuniform, float, product_quantization, topk, topk_uniform or rotated_topk"
                )


# Stateful compression (issue 19). Clients keep state across rounds only in the hand-written algorithm.
CLIENT_STATE_ALGORITHMS = {"fl_sweeps.algorithms.fedavg_core.build_fedavg_core": "fedavg_core"}
SPARSIFIER_MODULE = "fl_sweeps.compression.sparsifiers."  # every stage there sends a subset of the values
# catch_up -> what clients keep across rounds with it (they hold a model, so the algorithm must keep client state)
CATCH_UPS_HOLDING_MODELS = {
    "difference": "the model each client holds is kept",
    "anchors": "the anchor each client holds is kept",
}


def check_stateful_compression(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for error feedback or a difference or anchor catch-up that cannot work (on ``none``,
    without a delta broadcast to sampled clients, or with an algorithm whose clients keep no state) and for a
    sparsifying broadcast that sends the model itself instead of its change."""
    aggregate = cfg.get("aggregate_encoder")
    if aggregate is not None and aggregate.get("error_feedback") is True:
        if not aggregate.get("stages"):
            raise ConfigError(
                f"aggregate_encoder.error_feedback=true is not allowed for aggregate_encoder={aggregate.get('name')}: "
                "it loses nothing to feed back; use it with a lossy option (uniform, topk, sign, ...)"
            )
        _needs_client_state(cfg, "aggregate_encoder.error_feedback=true", "clients keep state")
    broadcast = cfg.get("broadcast_encoder")
    if broadcast is not None and broadcast.get("delta") is not True and broadcast.get("delta_receivers") == "all":
        raise ConfigError(
            "broadcast_encoder.delta_receivers=all is not allowed with broadcast_encoder.delta=false: only a delta "
            "broadcast has receivers to choose; set broadcast_encoder.delta=true"
        )
    catch_up = None if broadcast is None else broadcast.get("catch_up")
    if catch_up in CATCH_UPS_HOLDING_MODELS:
        if broadcast.get("delta") is not True or broadcast.get("delta_receivers") != "sampled":
            raise ConfigError(
                f"broadcast_encoder.catch_up={catch_up} is not allowed without broadcast_encoder.delta=true and "
                "delta_receivers=sampled: only clients that receive when sampled have a gap to catch up; set both"
            )
        _needs_client_state(cfg, f"broadcast_encoder.catch_up={catch_up}", CATCH_UPS_HOLDING_MODELS[catch_up])
    if broadcast is not None and broadcast.get("delta") is not True:
        stages = broadcast.get("stages") or []
        if any(str(stage.get("_target_", "")).startswith(SPARSIFIER_MODULE) for stage in stages):
            raise ConfigError(
                f"broadcast_encoder.delta=false is not allowed for broadcast_encoder={broadcast.get('name')}: it sends "
                "a subset of the values, from which a client cannot rebuild the model; use delta=true (the change "
                "of the model is sent)"
            )


VERIFY_CODING_ALGORITHMS = {"fl_sweeps.algorithms.fedavg_core.build_fedavg_core": "fedavg_core"}
ALGORITHM_NAMES = {"fl_sweeps.algorithms.fedavg.build_compressed_fed_avg": "fedavg", **VERIFY_CODING_ALGORITHMS}


def check_verify_coding(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` if ``compression.verify_coding`` is on with an algorithm that cannot hand its messages
    out (TFF's own FedAvg, one's own) or with no entropy-coded option to verify."""
    if OmegaConf.select(cfg, "compression.verify_coding", default=False) is not True:
        return
    target = OmegaConf.select(cfg, "algorithm._target_", default=None)
    if target not in VERIFY_CODING_ALGORITHMS:
        name = ALGORITHM_NAMES.get(target, target)
        raise ConfigError(
            f"compression.verify_coding=true is not allowed with algorithm={name}: only "
            f"algorithm={'|'.join(VERIFY_CODING_ALGORITHMS.values())} hands its messages out to be coded; add "
            "algorithm=fedavg_core"
        )
    sides = ("broadcast_encoder", "aggregate_encoder")
    if not any(OmegaConf.select(cfg, f"{side}.entropy_coding", default=False) is True for side in sides):
        raise ConfigError(
            "compression.verify_coding=true is not allowed without entropy coding: set "
            "broadcast_encoder.entropy_coding=true or aggregate_encoder.entropy_coding=true, or verify_coding=false"
        )


def _needs_client_state(cfg: DictConfig, setting: str, what: str) -> None:
    """Raise ``ConfigError`` for ``setting`` unless the algorithm keeps client state across rounds (``what`` is)."""
    if OmegaConf.select(cfg, "algorithm._target_", default=None) not in CLIENT_STATE_ALGORITHMS:
        raise ConfigError(
            f"{setting} is not allowed with this algorithm: {what} across rounds only in "
            f"algorithm={'|'.join(CLIENT_STATE_ALGORITHMS.values())}; add algorithm=fedavg_core"
        )


def check_schedule(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` unless the compression schedule (``schedule``) fits the config: its ``setting`` is a
    key of the ``side``'s option, every value passes that setting's rule, and ``from_rounds`` (if the option has it)
    gives each value a first round, strictly increasing from 1."""
    schedule = OmegaConf.select(cfg, "schedule", default=None)
    if not isinstance(schedule, DictConfig) or "side" not in schedule:
        return
    side, setting, values = str(schedule.side), str(schedule.setting), schedule["values"]
    option = OmegaConf.select(cfg, f"{side}.name", default=None)
    has = [key for key in SCHEDULABLE if key in cfg[side]]
    if setting not in has:
        allowed = f"use one of {', '.join(has)}" if has else "it has no setting to schedule; use schedule=constant"
        raise ConfigError(f"schedule.setting={setting} is not allowed for {side}={option}: {allowed}")
    ok, allowed = RULES[f"{side}.{setting}"]
    if not values or not all(_safe(ok, value) for value in values):
        raise ConfigError(
            f"schedule.values={_show(values)} is not allowed: use a non-empty list, each value {allowed} "
            f"({side}.{setting})"
        )
    if "from_rounds" in schedule:
        starts = schedule.from_rounds
        increasing = all(later > earlier for earlier, later in itertools.pairwise(starts))
        if len(starts) != len(values) or not starts or starts[0] != 1 or not increasing:
            raise ConfigError(
                f"schedule.from_rounds={_show(starts)} is not allowed: use one first round for each of the "
                f"{len(values)} values, strictly increasing from 1"
            )


_MISSING = object()
_PLACEHOLDERS = {"path": "directory", "cache_dir": "directory"}


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first mandatory value left unset (``???``) or setting outside its range.

    Raises:
        ConfigError: With a message like ``broadcast_encoder.bits=17 is not allowed: use an integer from 1 to 16``
            or ``data.path is required: set data.path=<directory>``.
    """
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        placeholder = _PLACEHOLDERS.get(key.rsplit(".", 1)[-1], "value")
        raise ConfigError(f"{key} is required: set {key}=<{placeholder}>")
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            continue
        if isinstance(value, DictConfig) or not _safe(ok, value):
            raise ConfigError(f"{key}={_show(value)} is not allowed: use {allowed}")
    check_entropy_coding(cfg)
    check_verify_coding(cfg)
    check_stateful_compression(cfg)
    check_schedule(cfg)
    check_eval_split(cfg)
    num_clients = OmegaConf.select(cfg, "data.num_clients", default=None)
    check_clients_per_round(cfg.training.clients_per_round, num_clients, "data.num_clients")


def check_eval_split(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` if rounds are to be evaluated on validation examples the data set does not hold."""
    split = OmegaConf.select(cfg, "eval.split", default=None)
    fraction = OmegaConf.select(cfg, "data.validation_fraction", default=None)
    if split == "validation" and fraction == 0:
        raise ConfigError(
            "eval.split=validation is not allowed with data.validation_fraction=0: there are no validation "
            "examples; use a data.validation_fraction in (0, 1) or eval.split=test"
        )


def check_clients_per_round(clients_per_round: int, num_clients: int | None, source: str) -> None:
    """Raise ``ConfigError`` if more clients are asked for per round than there are."""
    if num_clients is not None and clients_per_round > num_clients:
        raise ConfigError(
            f"training.clients_per_round={clients_per_round} is not allowed: use at most the {num_clients} "
            f"clients of the data ({source})"
        )


def _safe(ok: Callable[[Any], bool], value: Any) -> bool:
    try:
        return bool(ok(value))
    except TypeError:
        return False


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
        return str(OmegaConf.to_container(value))
    return repr(value) if isinstance(value, str) else str(value)
