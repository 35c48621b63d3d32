"""Every compressor option as its config file defines it: wire size by formula, decoding error within each method's
known bound, unbiasedness of the random ones, seeded randomness, and bad settings rejected before any work."""

from __future__ import annotations

import numpy as np
import pytest
from compressor_configs import encoder, option_names
from compressor_formulas import BUILT_IN_OPTIONS, formula, kept, rotated
from message_parts import find_part

import fl_sweeps.quiet  # noqa: F401  (before TF)
from fl_sweeps.compression.bits import TensorInfo, tensor_message_bits
from fl_sweeps.errors import ConfigError
from fl_sweeps.tff_runtime.autograph_rules import trace_tensor_encoding_without_autograph
from fl_sweeps.validation import validate

OPTIONS = option_names("aggregate_encoder")
COMPRESSORS = [name for name in OPTIONS if name != "none"]
SETTINGS = {  # options with numeric settings, and values to try
    "uniform": [{"bits": 1}, {"bits": 3}, {"bits": 8}, {"bits": 16}],
    "hadamard": [{"bits": 2}, {"bits": 5}],
    "qsgd": [{"levels": 1}, {"levels": 4}, {"levels": 100}],
    "nonuniform": [{"bits": 1}, {"bits": 3}, {"bits": 6}],
    "topk": [
        {"fraction": 0.01},
        {"fraction": 0.3},
        {"fraction": 1.0},
        {"fraction": 0.01, "entropy_coding": True},
        {"fraction": 0.3, "entropy_coding": True},
        {"fraction": 1.0, "entropy_coding": True},
    ],
    "randk": [{"fraction": 0.05}, {"fraction": 1.0}],
    "topk_uniform": [{"fraction": 0.1, "bits": 2}, {"fraction": 0.5, "bits": 4}],
    "rotated_topk": [{"fraction": 0.2}, {"fraction": 0.05, "entropy_coding": True}],
}
STOCHASTIC = {
    "uniform": {"rounding": "stochastic", "bits": 2},
    "hadamard": {"rounding": "stochastic", "bits": 2},
    "terngrad": {},
    "qsgd": {"levels": 2},
    "randk": {"fraction": 0.25},
}


def _round_trip(option, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Decoded values and the message (numpy) of ``x`` through the option's aggregation encoder."""
    return _round_tripper(option, x.shape, compiled=False)(x)


def _round_tripper(option, shape: tuple[int, ...], *, compiled: bool = True):
    """``x -> (decoded, message)`` through the option's aggregation encoder for inputs of ``shape``: eager, or traced
    once as a graph for many calls (as the TFF processes run it)."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.internal import tensor_encoding as te

    trace_tensor_encoding_without_autograph()
    size = int(np.prod(shape))
    gather = te.encoders.as_gather_encoder(option.tensor_encoder(size, True), tf.TensorSpec(shape, tf.float32))

    def round_trip(x):
        encode_params, before, after = gather.get_params(gather.initial_state())
        message, _ = gather.encode(x, encode_params)
        return gather.decode_after_sum(gather.decode_before_sum(message, before), after, 1), message

    run = tf.function(round_trip, autograph=False) if compiled else round_trip

    def numpy_round_trip(x: np.ndarray) -> tuple[np.ndarray, dict]:
        decoded, message = run(tf.constant(x))
        return decoded.numpy(), tf.nest.map_structure(lambda t: t.numpy(), message)

    return numpy_round_trip


def _cases():
    for name in BUILT_IN_OPTIONS:  # an option added to conf/ has no formula: its messages are measured in TFF tests
        for settings in SETTINGS.get(name, [{}]):
            yield pytest.param(name, settings, id=f"{name}-{settings}")


@pytest.mark.parametrize(("name", "settings"), list(_cases()))
def test_measured_message_equals_formula(compose_config, name, settings):
    """Measured from actually encoded tensors (what the TFF processes use) against the formula (docs/compressors.md)."""
    option = encoder(compose_config, name, **settings, **({} if name == "none" else {"threshold": 0}))
    for n in (1, 7, 100, 1000, 1023, 4097, 20001):
        measured = tensor_message_bits(option, TensorInfo(n), gather=True, seed=n)
        assert measured == formula(option, n), (n, measured)
        broadcast = tensor_message_bits(option, TensorInfo(n), gather=False, seed=n)[0]
        assert broadcast == sum(formula(option, n)), n  # a broadcast's parameters travel in its message


def test_threshold_keeps_small_tensors_unencoded(compose_config):
    for name in COMPRESSORS:
        option = encoder(compose_config, name, threshold=500)
        assert tensor_message_bits(option, TensorInfo(500), gather=True) == (500 * 32, 0), name
        # 501 values as a 3x167 matrix: the options that flatten see 501 values, powersgd a matrix (vectors it sends
        # as float32), with its default rank 2 <= 3.
        above = tensor_message_bits(option, TensorInfo(501, shape=(3, 167)), gather=True)
        if name in BUILT_IN_OPTIONS:
            assert above == formula(option, 501), name
        else:  # an option added to conf/: no formula, but the tensor above the threshold is encoded
            assert above != (501 * 32, 0), name


def _gaussian(n: int = 2048, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("rounding", ["deterministic", "stochastic"])
def test_uniform_error_within_a_step(compose_config, bits, rounding):
    x = _gaussian(seed=bits)
    decoded, _ = _round_trip(encoder(compose_config, "uniform", bits=bits, threshold=0, rounding=rounding), x)
    step = (x.max() - x.min()) / (2**bits - 1)
    bound = step / 2 if rounding == "deterministic" else step  # nearest level, or one of the two around
    assert np.max(np.abs(decoded - x)) <= bound * (1 + 1e-4) + 1e-6


@pytest.mark.parametrize("bits", [2, 8])
def test_hadamard_error_bound(compose_config, bits):
    """Rotated values lie within ±||x||, the rotation keeps norms: ||x̂ - x|| <= sqrt(m) ||x|| / (2**bits - 1)."""
    x = _gaussian(1000, seed=bits)
    decoded, _ = _round_trip(encoder(compose_config, "hadamard", bits=bits, threshold=0), x)
    bound = np.sqrt(rotated(x.size)) * np.linalg.norm(x) / (2**bits - 1)
    assert np.linalg.norm(decoded - x) <= bound


def test_sign_is_the_least_squares_scaled_sign(compose_config):
    x = _gaussian()
    decoded, _ = _round_trip(encoder(compose_config, "sign", threshold=0), x)
    np.testing.assert_allclose(decoded, np.where(x >= 0, 1, -1) * np.mean(np.abs(x)), rtol=1e-5)
    error = np.sum((decoded - x) ** 2)
    np.testing.assert_allclose(error, np.sum(x**2) - np.sum(np.abs(x)) ** 2 / x.size, rtol=1e-3)


def test_drive_error(compose_config):
    """DRIVE's error ||x||² (d ||x||² / ||Rx||_1² - 1): about π/2 - 1 of ||x||² on Gaussian data, none on a spike
    (a rotated one-hot vector has equal magnitudes, which one sign and one scale carry exactly)."""
    option = encoder(compose_config, "drive", threshold=0)
    x = _gaussian()
    decoded, _ = _round_trip(option, x)
    assert 0.4 < np.sum((decoded - x) ** 2) / np.sum(x**2) < 0.7
    spike = np.zeros(1024, np.float32)
    spike[17] = 3.0
    decoded, _ = _round_trip(option, spike)
    np.testing.assert_allclose(decoded, spike, atol=1e-5)


def test_terngrad_and_qsgd_per_value_bounds(compose_config):
    x = _gaussian()
    decoded, message = _round_trip(encoder(compose_config, "terngrad", threshold=0), x)
    scale = np.max(np.abs(x))
    assert set(np.unique(np.round(decoded / scale, 5))) <= {-1.0, 0.0, 1.0}
    assert np.max(np.abs(decoded - x)) <= scale * (1 + 1e-6)
    for levels in (1, 3, 16):
        decoded, _ = _round_trip(encoder(compose_config, "qsgd", levels=levels, threshold=0), x)
        step = np.linalg.norm(x) / levels
        assert np.max(np.abs(decoded - x)) <= step * (1 + 1e-5)  # one of the two levels around |x_i|
        assert np.all(np.sign(decoded) * np.sign(x) >= 0)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_nonuniform_sends_the_nearest_codebook_level(compose_config, bits):
    x = np.random.default_rng(bits).standard_t(3, size=3000).astype(np.float32)  # heavy tails
    option = encoder(compose_config, "nonuniform", bits=bits, threshold=0)
    decoded, message = _round_trip(option, x)
    codebook = find_part(message, "codebook")
    assert codebook.size == 2**bits
    nearest = codebook[np.argmin(np.abs(x[:, None] - codebook[None, :]), axis=1)]
    np.testing.assert_allclose(np.abs(decoded - x), np.abs(nearest - x), atol=1e-6)
    uniform, _ = _round_trip(encoder(compose_config, "uniform", bits=bits, threshold=0), x)
    assert np.sum((decoded - x) ** 2) < np.sum((uniform - x) ** 2)  # levels placed by the data beat a grid


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_topk_keeps_the_largest(compose_config, fraction):
    x = _gaussian(999, seed=3)
    decoded, _ = _round_trip(encoder(compose_config, "topk", fraction=fraction, threshold=0), x)
    k = kept(x.size, fraction)
    expected = np.zeros_like(x)
    largest = np.argsort(-np.abs(x))[:k]
    expected[largest] = x[largest]
    np.testing.assert_array_equal(decoded, expected)
    assert np.sum((decoded - x) ** 2) <= (1 - k / x.size) * np.sum(x**2) + 1e-6


def test_compositions(compose_config):
    x = _gaussian(1000, seed=4)
    decoded, message = _round_trip(encoder(compose_config, "topk_uniform", fraction=0.1, bits=4, threshold=0), x)
    top = np.argsort(-np.abs(x))[:100]
    kept_values = x[top]
    step = (kept_values.max() - kept_values.min()) / 15
    assert np.count_nonzero(decoded) <= 100 and np.all(decoded[np.setdiff1d(np.arange(1000), top)] == 0)
    assert np.max(np.abs(decoded[top] - kept_values)) <= step / 2 * (1 + 1e-4)
    decoded, _ = _round_trip(encoder(compose_config, "rotated_topk", fraction=0.2, threshold=0), x)
    k = kept(rotated(1000), 0.2)
    assert np.sum((decoded - x) ** 2) <= (1 - k / rotated(1000)) * np.sum(x**2) * (1 + 1e-5)


def _mean_error(compose_config, name: str, settings: dict, trials: int = 300) -> tuple[float, float]:
    """(||mean error||², mean ||error||²) over ``trials`` encodings of inputs perturbed in the last bits (each
    draws other random numbers: they are seeded from the values)."""
    option = encoder(compose_config, name, threshold=0, **settings)
    x = _gaussian(256, seed=5)
    round_trip = _round_tripper(option, x.shape)  # traced once: 300 eager encodings took up to a minute
    errors = []
    for trial in range(trials):
        nudged = x + np.float32(1e-6) * np.random.default_rng(trial).normal(size=x.size).astype(np.float32)
        decoded, _ = round_trip(nudged)
        errors.append(decoded - nudged)
    errors = np.array(errors)
    return float(np.sum(errors.mean(axis=0) ** 2)), float(np.mean(np.sum(errors**2, axis=1)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_options_are_unbiased(compose_config, name):
    """Unbiased: the mean error over N independent encodings has squared norm E||e||²/N (x3 margin); biased
    options (negative control below) miss that by far."""
    squared_mean, mean_squared = _mean_error(compose_config, name, STOCHASTIC[name])
    assert squared_mean < 3 * mean_squared / 300


@pytest.mark.slow
def test_the_unbiasedness_check_fails_for_a_biased_option(compose_config):
    squared_mean, mean_squared = _mean_error(compose_config, "uniform", {"bits": 2}, trials=100)
    assert squared_mean > 10 * mean_squared / 100


@pytest.mark.parametrize("name", ["uniform", "hadamard", "terngrad", "qsgd", "randk", "drive", "rotated_topk"])
def test_random_numbers_are_seeded_by_the_values(compose_config, name):
    """The same values give the same message bit for bit (any process, any call); other values other draws."""
    settings = {**STOCHASTIC.get(name, {}), "threshold": 0}
    x = _gaussian(512, seed=6)
    first = _round_trip(encoder(compose_config, name, **settings), x)
    again = _round_trip(encoder(compose_config, name, **settings), x)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(
            np.concatenate([np.ravel(t) for t in _leaves(a)]), np.concatenate([np.ravel(t) for t in _leaves(b)])
        )
    nudged = _round_trip(encoder(compose_config, name, **settings), x + np.float32(1e-6))[0]
    assert not np.array_equal(np.sign(first[0] - x), np.sign(nudged - x - np.float32(1e-6)))


def _leaves(structure) -> list:
    import tensorflow as tf

    return tf.nest.flatten(structure)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["aggregate_encoder=topk", "aggregate_encoder.fraction=0"], "aggregate_encoder.fraction=0.0 is not allowed"),
        (
            ["aggregate_encoder=randk", "aggregate_encoder.fraction=1.5"],
            "aggregate_encoder.fraction=1.5 is not allowed",
        ),
        (["aggregate_encoder=qsgd", "aggregate_encoder.levels=0"], "aggregate_encoder.levels=0 is not allowed"),
        (["broadcast_encoder=nonuniform", "broadcast_encoder.bits=17"], "broadcast_encoder.bits=17 is not allowed"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_work(compose_config, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_sparsifying_stage_is_refused_for_the_broadcast_when_built():
    """Also an option of the user's own (not in the validation's list of built-in sparsifiers)."""
    import tensorflow_federated as tff

    from fl_sweeps.compression.broadcast import build_encoded_broadcast
    from fl_sweeps.compression.chain import StageChain

    own = StageChain(
        name="my_sparsifier", stages=({"_target_": "fl_sweeps.compression.sparsifiers.RandK", "fraction": 0.5},)
    )
    with pytest.raises(ConfigError, match="broadcast_encoder=my_sparsifier sparsifies"):
        build_encoded_broadcast(value_type=tff.TensorType(np.float32, [100]), encoder=own)


def test_the_broadcast_sparsifier_needs_the_delta_broadcast(compose_config):
    """``broadcast_encoder=topk`` sends the change of the model (``delta: true``); the model itself it cannot."""
    validate(compose_config(["broadcast_encoder=topk"]))
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["broadcast_encoder=topk", "broadcast_encoder.delta=false"]))
    assert str(error.value).startswith("broadcast_encoder.delta=false is not allowed for broadcast_encoder=topk")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["randk", "topk_uniform", "rotated_topk"])
def test_a_sparsifier_for_the_broadcast_fails_in_one_line(compose_config, name):
    """These sparsifiers have no ``broadcast_encoder`` option: the CLI's one line names the key and the options."""
    from fl_sweeps.preflight import user_error

    with pytest.raises(Exception) as error:
        compose_config([f"broadcast_encoder={name}"])
    message = user_error(error.value)
    assert message.startswith(f"broadcast_encoder={name} is not allowed: use one of drive, float, hadamard, none")
    assert name not in message.split("use one of", 1)[1]
