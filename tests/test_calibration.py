"""Calibrated probabilities: the map the device applies, its fitting and measures, and the logit output
that keeps an int8 model's probabilities from saturating."""
import json

import numpy as np
import pytest

from convert.calibration import choose, cross_validated, fit
from edge.metrics import brier, expected_calibration_error, reliability
from edge.calibration import Calibration, logit, sigmoid


def test_calibration_maps_known_logits_to_known_probabilities():
    platt = Calibration("platt", slope=0.5, intercept=-1.0, output_kind="logit")
    np.testing.assert_allclose(platt.probabilities([2.0, 0.0, -4.0]), [0.5, 1 / (1 + np.e), 1 / (1 + np.exp(3))])
    # an older model's sigmoid output is read back as its logit first
    older = Calibration("platt", slope=0.5, intercept=-1.0, output_kind="probability")
    assert older.probability(float(sigmoid(2.0))) == pytest.approx(0.5)
    assert Calibration("none", output_kind="logit").probability(0.0) == 0.5
    # strictly increasing: a threshold on the logit is the same decision as on the probability
    z = np.linspace(-30, 30, 601)
    assert np.all(np.diff(platt.probabilities(z)) > 0)


@pytest.mark.parametrize("record, problem", [({"method": "magic"}, "method"), ({"method": "platt", "slope": -1}, "slope"),
                                             ({"method": "platt", "slope": float("nan")}, "slope"),
                                             ({"method": "none", "slope": 2.0}, "none")])
def test_malformed_calibration_is_refused_in_one_line(record, problem):
    with pytest.raises(ValueError, match=problem):
        Calibration.from_metadata(record, "logit")


def _overconfident(n=4000, seed=0, slope=0.4, intercept=0.3):
    """Logits of a model that is too sure: the true probability is sigmoid(slope * logit + intercept)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4, n)
    y = (rng.random(n) < sigmoid(slope * z + intercept)).astype(int)
    return z, y


def test_platt_scaling_recovers_the_map_that_generated_the_labels():
    z, y = _overconfident()
    platt = fit("platt", z, y)
    assert platt.slope == pytest.approx(0.4, abs=0.05) and platt.intercept == pytest.approx(0.3, abs=0.12)
    temperature = fit("temperature", z, y)
    assert temperature.intercept == 0.0 and 0.3 < temperature.slope < 0.5


def test_ece_and_brier_of_known_probabilities():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])  # two bins, each off by 0.05
    assert expected_calibration_error(p, y) == pytest.approx(0.05)
    assert brier(p, y) == pytest.approx(0.0025)
    rows = reliability(p, y)
    assert len(rows) == 10 and rows[0]["count"] == 2 and rows[9]["observed"] == 1.0 and rows[5]["count"] == 0


def test_chosen_calibration_lowers_the_cross_validated_ece_of_an_overconfident_model():
    z, y = _overconfident(seed=1)
    folds = np.arange(len(y)) % 5
    calibration, record = choose(z, y, folds)
    assert calibration.method in ("platt", "temperature")
    assert record["uncalibrated"]["ece"] > 0.1
    assert record["calibrated"]["ece"] < 0.03 and record["calibrated"]["ece"] < record["uncalibrated"]["ece"]
    held = cross_validated(calibration.method, z, y, folds)
    assert expected_calibration_error(held, y) == pytest.approx(record["calibrated"]["ece"])
    json.dumps(record)  # goes into the verification file as it is


def test_logit_of_an_exact_zero_or_one_stays_finite():
    assert np.all(np.isfinite(logit([0.0, 1.0])))


def test_an_int8_model_outputs_a_logit_that_does_not_saturate(tmp_path):
    """A tiny Keras model with a sigmoid head, converted as python -m convert does: its int8 output is the
    logit, so confident inputs keep distinct probabilities where an int8 sigmoid reads 1.0."""
    pytest.importorskip("tensorflow")
    import keras

    from convert.tflite import convert_keras
    from edge.interpreter import dequantize, make_interpreter, output_details, quantize, input_details

    inputs = keras.Input((8, 8, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    score = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(60.0),
                               bias_initializer=keras.initializers.Constant(-30.0))(pooled)
    model = keras.Model(inputs, score)
    rng = np.random.default_rng(0)
    # calibration images of every brightness: logits from -30 to 30
    x = (rng.random((64, 1, 1, 1)) * np.ones((1, 8, 8, 1))).astype(np.float32)
    path = tmp_path / "tiny_int8.tflite"
    path.write_bytes(convert_keras(model, ["int8"], x)["int8"])
    interpreter, _ = make_interpreter(path)
    inp, out = input_details(interpreter), output_details(interpreter)
    assert out["dtype"] == np.int8 and out["quantization"][0] > 1 / 256  # a logit's scale, not the sigmoid's 1/256
    brightness = np.linspace(0.55, 1.0, 40, dtype=np.float32)  # logits 3 to 30: an int8 sigmoid saturates
    logits = []
    for level in brightness:
        interpreter.set_tensor(inp["index"], quantize(np.full((1, 8, 8, 1), level, np.float32), inp))
        interpreter.invoke()
        logits.append(float(dequantize(interpreter.get_tensor(out["index"]), out)[0, 0]))
    expected = 60 * brightness - 30
    np.testing.assert_allclose(logits, expected, atol=3 * out["quantization"][0] + 0.5)
    probabilities = sigmoid(np.array(logits))
    assert len(np.unique(probabilities)) >= 30  # an int8 sigmoid gives 1.0 (or 0.996) for nearly all of them
    assert np.all(np.diff(probabilities) >= 0)
