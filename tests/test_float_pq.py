"""The ``float`` and ``product_quantization`` options (issue 39): bits measured on real TFF processes equal the wire
format counted by hand, decoding is exact where the format is lossless, the floats round as ml_dtypes and NumPy
round (to nearest, ties to even), k-means sends each sub-vector's nearest centroid, the same seed gives the same
numbers, and bad settings stop in one line before any work."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from cli_inprocess import fl_sweep
from compressor_configs import build_trial, encoder, run_settings
from conftest import TINY, TINY_LINEAR
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from message_parts import find_part

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.compression.bits import WEIGHT_BITS, TensorInfo, tensor_message_bits
from fl_sweeps.errors import ConfigError
from fl_sweeps.preflight import user_error
from fl_sweeps.schema import FloatFormat
from fl_sweeps.validation import validate

WORD = 32
FP8 = {"float8_e4m3": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2}
NARROW = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, **FP8}
WIDTH = {"float16": 16, "bfloat16": 16, "float8_e4m3": 8, "float8_e5m2": 8}


# ---- The wire formats, counted by hand (docs/compressors.md) ----


def words(values: int, bits: int) -> int:
    """Bits of ``values`` symbols of ``bits`` bits laid end to end in whole 32-bit words."""
    return WORD * math.ceil(values * bits / WORD)


def float_bits(float_format: str, n: int) -> int:
    """``float``: ``n`` values at the format's width, packed; the 8-bit formats add their float32 scale."""
    return words(n, WIDTH[float_format]) + (32 if float_format in FP8 else 0)


def pq_bits(codewords: int, dim: int, n: int) -> int:
    """``product_quantization``: one index of ``ceil(log2 codewords)`` bits for each of the ``ceil(n / dim)``
    sub-vectors (the last one's padding costs no more than its index), packed; the codebook, ``codewords x dim``
    float32."""
    return words(-(-n // dim), math.ceil(math.log2(codewords))) + 32 * codewords * dim


def tensor_bits(option, n: int) -> int:
    """Bits of one float32 tensor of ``n`` values: unencoded at most ``threshold`` values, else its wire format."""
    if n <= option.threshold:
        return 32 * n
    if option.name == "float":
        return float_bits(option.format, n)
    return pq_bits(option.codewords, option.dim, n)


# ---- Encoding outside TFF, as the processes encode ----


def _codec(option, n: int):
    """``x -> (decoded, message)`` through the option's aggregation encoder for ``n`` values, traced once."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph

    trace_tensor_encoding_without_autograph()
    gather = te.encoders.as_gather_encoder(option.tensor_encoder(n, True), tf.TensorSpec([n], tf.float32))

    @tf.function(autograph=False)
    def round_trip(x):
        encode_params, before, after = gather.get_params(gather.initial_state())
        message, _ = gather.encode(x, encode_params)
        return gather.decode_after_sum(gather.decode_before_sum(message, before), after, 1), message

    def run(x: np.ndarray) -> tuple[np.ndarray, dict]:
        decoded, message = round_trip(tf.constant(x, tf.float32))
        return decoded.numpy(), tf.nest.map_structure(lambda t: t.numpy(), message)

    return run


def _measured(message: dict) -> int:
    """The message's bits as the processes count them."""
    import tensorflow as tf

    from fl_sweeps.compression.measure import message_bits

    return int(message_bits(tf.nest.map_structure(tf.constant, message)))


def _unpack(words_: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``count`` symbols of ``bits`` bits from packed int32 words (the first symbol in the lowest bits)."""
    stream = np.unpackbits(words_.astype("<i4").view(np.uint8), bitorder="little")[: count * bits]
    return stream.reshape(count, bits) @ (1 << np.arange(bits))


# ---- float ----


def test_the_schema_formats_are_the_stage_formats():
    from fl_sweeps.compression.float_formats import FORMATS

    assert tuple(FloatFormat) == tuple(FORMATS) == tuple(NARROW)


@pytest.mark.parametrize("float_format", sorted(WIDTH))
def test_float_messages_measure_as_counted_by_hand(compose_config, float_format):
    option = encoder(compose_config, "float", format=float_format, threshold=0)
    for n in (1, 3, 7, 100, 1001, 20001):
        assert tensor_message_bits(option, TensorInfo(n), gather=True, seed=n) == (float_bits(float_format, n), 0)


def _midpoints(values: np.ndarray) -> np.ndarray:
    """The points halfway between neighbouring finite ``values`` (float32; exact: one bit more than the format)."""
    ordered = np.unique(values[np.isfinite(values)].astype(np.float64))
    return ((ordered[1:] + ordered[:-1]) / 2).astype(np.float32)


@pytest.mark.parametrize("float_format", ["float16", "bfloat16"])
def test_16_bit_formats_round_to_nearest_even_and_send_their_own_values_exactly(compose_config, float_format):
    narrow = NARROW[float_format]
    rng = np.random.default_rng(0)
    scattered = (rng.normal(size=3000) * 10.0 ** rng.integers(-6, 4, size=3000)).astype(np.float32)
    low = np.abs(scattered[:500]).astype(narrow)
    high = (low.view(np.uint16) + np.uint16(1)).view(narrow)  # the next value of the format
    ties = ((low.astype(np.float64) + high.astype(np.float64)) / 2).astype(np.float32)  # exact: one bit more
    x = np.concatenate([scattered, ties, -ties]).astype(np.float32)
    codec = _codec(encoder(compose_config, "float", format=float_format, threshold=0), x.size)
    decoded, message = codec(x)
    np.testing.assert_array_equal(decoded, x.astype(narrow).astype(np.float32))
    representable = x.astype(narrow).astype(np.float32)
    np.testing.assert_array_equal(codec(representable)[0], representable)  # lossless for the format's own values
    assert _measured(message) == float_bits(float_format, x.size)


@pytest.mark.parametrize("float_format", sorted(FP8))
def test_8_bit_formats_send_exactly_ml_dtypes_values_with_a_power_of_two_scale(compose_config, float_format):
    """Every finite value of the format (all 256 bit patterns but NaN and infinity, decoded by ml_dtypes), times a
    power of two, comes back exactly; other values round as ml_dtypes rounds (ties to even) after the scale."""
    narrow = FP8[float_format]
    values = np.arange(256, dtype=np.uint8).view(narrow).astype(np.float32)
    finite = values[np.isfinite(values)]
    largest = float(np.max(finite))
    option = encoder(compose_config, "float", format=float_format, threshold=0)
    codec = _codec(option, finite.size)
    for power in (0, -20, 9):
        x = finite * np.float32(2.0**power)
        decoded, message = codec(x)
        np.testing.assert_array_equal(decoded, x)
        assert find_part(message, "scale") == np.float32(2.0**power)

    rng = np.random.default_rng(1)
    ties = _midpoints(values)  # between neighbouring values, subnormals and zero included
    x = np.concatenate([ties, -ties, [largest], rng.uniform(-largest, largest, size=2000)]).astype(np.float32)
    codec = _codec(option, x.size)
    for factor, scale in ((2.0**-12, 2.0**-12), (3e-4, None)):  # None: the scale the largest magnitude asks for
        scaled = x * np.float32(factor)
        scale = scale or 2.0 ** math.ceil(math.log2(np.max(np.abs(scaled)) / largest))
        decoded, message = codec(scaled)
        assert find_part(message, "scale") == np.float32(scale)
        expected = (scaled / np.float32(scale)).astype(narrow).astype(np.float32) * np.float32(scale)
        np.testing.assert_array_equal(decoded, expected)
        assert _measured(message) == float_bits(float_format, x.size)
    decoded, message = _codec(option, 8)(np.zeros(8, np.float32))
    np.testing.assert_array_equal(decoded, np.zeros(8))
    assert find_part(message, "scale") == 1.0


# ---- product_quantization ----


def _pq(compose_config, **settings):
    return encoder(compose_config, "product_quantization", threshold=0, **settings)


def _nearest_error(x: np.ndarray, codebook: np.ndarray, dim: int) -> np.ndarray:
    """Squared distance of each (zero-padded) sub-vector of ``x`` to its nearest centroid."""
    vectors = np.pad(x, (0, -x.size % dim)).reshape(-1, dim).astype(np.float64)
    return np.min(np.sum((vectors[:, None, :] - codebook[None].astype(np.float64)) ** 2, axis=2), axis=1)


def test_pq_messages_measure_as_counted_by_hand(compose_config):
    for codewords, dim, sizes in (
        (2, 1, (1, 7, 20001)),
        (16, 3, (7, 1001)),
        (256, 4, (1, 1001)),
        (300, 2, (4097,)),
        (65536, 1, (7, 100)),
    ):
        option = _pq(compose_config, codewords=codewords, dim=dim, iterations=1)
        for n in sizes:
            measured = tensor_message_bits(option, TensorInfo(n), gather=True, seed=n)
            assert measured == (pq_bits(codewords, dim, n), 0), (codewords, dim, n)


def test_pq_is_exact_with_as_many_codewords_as_distinct_sub_vectors(compose_config):
    rng = np.random.default_rng(2)
    distinct = rng.normal(size=(15, 3)).astype(np.float32)
    x = distinct[rng.integers(0, 15, size=700)].reshape(-1)[:2099]  # 700 sub-vectors, the last padded by a zero
    for codewords in (16, 64):  # 15 distinct sub-vectors and the padded last one
        decoded, message = _codec(_pq(compose_config, codewords=codewords, dim=3, iterations=4), x.size)(x)
        np.testing.assert_array_equal(decoded, x)
        assert _measured(message) == pq_bits(codewords, 3, x.size)
    few = rng.normal(size=37).astype(np.float32)  # 10 sub-vectors of 4, all different: fewer than 16 codewords
    np.testing.assert_array_equal(_codec(_pq(compose_config, codewords=16, dim=4, iterations=0), 37)(few)[0], few)


def test_pq_sends_each_sub_vector_as_its_nearest_centroid_and_lloyd_steps_lower_the_error(compose_config):
    x = np.random.default_rng(3).standard_t(3, size=3000).astype(np.float32)
    errors = []
    for iterations in (0, 1, 8):
        decoded, message = _codec(_pq(compose_config, codewords=32, dim=2, iterations=iterations), x.size)(x)
        codebook = find_part(message, "codebook")
        assert codebook.shape == (32, 2)
        sent = np.sum(((decoded - x).reshape(-1, 2).astype(np.float64)) ** 2, axis=1)
        np.testing.assert_allclose(sent, _nearest_error(x, codebook, 2), rtol=1e-5, atol=1e-12)
        errors.append(np.sum((decoded.astype(np.float64) - x) ** 2))
    assert errors[1] <= errors[0] * (1 + 1e-6) and errors[2] < 0.8 * errors[0]


def test_pq_entropy_coding_codes_the_indices(compose_config):
    """With ``entropy_coding`` the indices count as coded under their own histogram (``bit_packing``'s count, here
    by hand from the indices read back from the message), the codebook as float32."""
    x = np.random.default_rng(4).laplace(size=4002).astype(np.float32)
    codewords, dim, n = 64, 2, 4002
    option = _pq(compose_config, codewords=codewords, dim=dim, iterations=3, entropy_coding=True)
    decoded, message = _codec(option, n)(x)
    count, bits = n // dim, 6
    indices = _unpack(find_part(message, "bitpacked_values"), bits, count)
    np.testing.assert_array_equal(find_part(message, "codebook")[indices].reshape(-1), decoded)
    counts = np.bincount(indices, minlength=2**bits).astype(np.float64)
    information = count * math.log2(count) - sum(c * math.log2(c) for c in counts if c)
    coded = WORD * math.ceil((information + 64 + count / 1024) / WORD) + 2**bits * math.ceil(math.log2(count + 1))
    assert _measured(message) == coded + 32 * codewords * dim


def test_pq_random_start_is_seeded_by_the_values(compose_config):
    x = np.random.default_rng(5).normal(size=2048).astype(np.float32)
    option = _pq(compose_config, codewords=64, dim=4, iterations=1)
    first, again = _codec(option, x.size)(x), _codec(_pq(compose_config, codewords=64, dim=4, iterations=1), x.size)(x)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(find_part(first[1], "codebook"), find_part(again[1], "codebook"))
    nudged = _codec(option, x.size)(x + np.float32(1e-6))
    assert not np.array_equal(find_part(first[1], "codebook"), find_part(nudged[1], "codebook"))


# ---- Real TFF processes: measured bits = the hand count, every round; same seed, same numbers ----

TRIALS = {  # name: overrides (both options in both directions, some tensors under the threshold)
    "fp8 up, pq down (cnn_tiny)": [
        *TINY,
        "aggregate_encoder=float",
        "aggregate_encoder.format=float8_e4m3",
        "aggregate_encoder.threshold=100",
        "broadcast_encoder=product_quantization",
        "broadcast_encoder.codewords=16",
        "broadcast_encoder.dim=3",
        "broadcast_encoder.iterations=2",
        "broadcast_encoder.threshold=100",
    ],
    "pq up, bf16 down (linear)": [
        *TINY_LINEAR,
        "aggregate_encoder=product_quantization",
        "aggregate_encoder.codewords=32",
        "aggregate_encoder.dim=3",
        "aggregate_encoder.iterations=3",
        "aggregate_encoder.threshold=0",
        "broadcast_encoder=float",
        "broadcast_encoder.format=bfloat16",
        "broadcast_encoder.threshold=0",
    ],
    "fp16 up, e5m2 down (linear)": [
        *TINY_LINEAR,
        "aggregate_encoder=float",
        "aggregate_encoder.threshold=0",
        "broadcast_encoder=float",
        "broadcast_encoder.format=float8_e5m2",
        "broadcast_encoder.threshold=0",
    ],
}


@pytest.fixture(scope="module")
def trials(compose_config, tff_worker):
    """Each of ``TRIALS`` built once: (config, trial, its round records with the config's seed)."""
    built = {}
    for name, overrides in TRIALS.items():
        cfg = compose_config(overrides)
        trial = build_trial(cfg)
        built[name] = (cfg, trial, list(trial.run(run_settings(cfg))))
    return built


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRIALS))
def test_measured_bits_are_the_hand_count_every_round(trials, name):
    cfg, trial, records = trials[name]
    model = instantiate(cfg.model)(trial.data.input_shape, trial.data.num_classes)
    trainable = [int(np.prod(w.shape)) for w in model.trainable_weights]
    every = trainable + [int(np.prod(w.shape)) for w in model.non_trainable_weights]
    down_option, up_option = instantiate(cfg.broadcast_encoder), instantiate(cfg.aggregate_encoder)
    down = sum(tensor_bits(down_option, n) for n in every)
    up = sum(tensor_bits(up_option, n) for n in trainable) + WEIGHT_BITS
    clients = cfg.training.clients_per_round
    assert len(records) == cfg.training.rounds
    assert [(r.broadcast_bits, r.aggregate_bits) for r in records] == [(down * clients, up * clients)] * len(records)
    assert all(np.isfinite(r.train_loss) for r in records)


def _history(trial, settings) -> list[tuple]:
    return [
        (r.train_loss, r.eval_loss, r.eval_accuracy, r.broadcast_bits, r.aggregate_bits) for r in trial.run(settings)
    ]


@pytest.mark.slow
def test_same_seed_same_numbers_reused_or_rebuilt(trials):
    """Product quantization draws its start from the values: the same trial seed repeats every number, in the
    same process or one built afresh; another seed gives others."""
    cfg, trial, records = trials["pq up, bf16 down (linear)"]
    first = [(r.train_loss, r.eval_loss, r.eval_accuracy, r.broadcast_bits, r.aggregate_bits) for r in records]
    weights = [np.asarray(w) for w in trial.model_weights(trial.final_state).trainable]
    assert _history(trial, run_settings(cfg)) == first
    rebuilt = build_trial(cfg)
    assert _history(rebuilt, run_settings(cfg)) == first
    for a, b in zip(
        weights, [np.asarray(w) for w in rebuilt.model_weights(rebuilt.final_state).trainable], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert _history(trial, run_settings(cfg, seed=cfg.seed + 1)) != first


# ---- Bad input: one line naming the setting, before any work ----

FORMATS_LINE = "use one of float16, bfloat16, float8_e4m3, float8_e5m2"


@pytest.mark.parametrize("side", ["aggregate_encoder", "broadcast_encoder"])
def test_an_unknown_float_format_is_one_line(compose_config, side):
    override = f"{side}.format=float9"
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([f"{side}=float", override])
    line = user_error(error.value, [override])
    assert line.startswith(f"{side}.format='float9' is not allowed: {FORMATS_LINE}") and "\n" not in line


@pytest.mark.parametrize(
    ("setting", "allowed"),
    [
        ("codewords=1", "an integer from 2 to 65536 (2^16)"),
        ("codewords=65537", "an integer from 2 to 65536 (2^16)"),
        ("dim=0", "an integer >= 1"),
        ("iterations=-1", "an integer >= 0"),
    ],
)
@pytest.mark.parametrize("side", ["aggregate_encoder", "broadcast_encoder"])
def test_bad_product_quantization_settings_are_one_line(compose_config, side, setting, allowed):
    with pytest.raises(ConfigError) as error:
        validate(compose_config([f"{side}=product_quantization", f"{side}.{setting}"]))
    assert str(error.value) == f"{side}.{setting} is not allowed: use {allowed}"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["aggregate_encoder=product_quantization", "aggregate_encoder.codewords=1"],
            "aggregate_encoder.codewords=1 is not allowed: use an integer from 2 to 65536 (2^16)",
        ),
        (["broadcast_encoder=float", "broadcast_encoder.format=fp8"], "broadcast_encoder.format='fp8' is not allowed"),
    ],
)
def test_the_cli_stops_in_one_line_and_records_nothing(tmp_path, overrides, line):
    done = fl_sweep(
        tmp_path, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "hydra.run.dir=hydra", *overrides
    )
    assert done.returncode != 0
    lines = [text for text in done.stderr.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"fl-sweep: error: {line}")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_stages_refuse_bad_settings_themselves():
    """A chain of one's own that uses the stages directly gets the same limits from their constructors."""
    from fl_sweeps.compression.float_formats import FloatCast
    from fl_sweeps.compression.product_quantization import ProductQuantize

    with pytest.raises(ValueError, match="float_format must be one of"):
        FloatCast("float9")
    for settings in ({"codewords": 1}, {"codewords": 65537}, {"dim": 0}, {"iterations": -1}):
        with pytest.raises(ValueError, match=f"{next(iter(settings))} must be"):
            ProductQuantize(**{"codewords": 16, "dim": 2, "iterations": 1, **settings})


def test_the_matched_budget_sends_product_quantization_at_2_bits_and_float_at_8(compose_config):
    """``sweep=matched_budget`` holds both options, with settings that send 2 bits a value (product quantization)
    and the fewest ``float`` sends, 8 (on a 100,000-value tensor, where the side information is negligible)."""
    from hydra import compose, initialize_config_dir

    from fl_sweeps.cli import config_dir
    from fl_sweeps.sweep.search_space import parse_search_space

    compose_config()  # registers the schemas
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        sweeper = compose(
            config_name="config", overrides=["sweep=matched_budget"], return_hydra_config=True
        ).hydra.sweeper
    assert {"float", "product_quantization"} <= set(sweeper.sampler.search_space.aggregate_encoder)
    fixed = parse_search_space([f"{key}={value}" for key, value in sweeper.params.items()]).fixed
    for option, bits_a_value in (("product_quantization", 2), ("float", 8)):
        keys = compose_config([f"aggregate_encoder={option}"]).aggregate_encoder
        settings = [
            f"{key}={value}"
            for key, value in fixed.items()
            if key.startswith("aggregate_encoder.") and key[18:] in keys
        ]
        chosen = instantiate(compose_config([f"aggregate_encoder={option}", *settings]).aggregate_encoder)
        message, params = tensor_message_bits(chosen, TensorInfo(100_000), gather=True)
        assert (message + params) / 100_000 == pytest.approx(bits_a_value, rel=0.01), option
