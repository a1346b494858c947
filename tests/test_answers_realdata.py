"""What the shipped models say about real images: probabilities with resolution, no class for what a
model cannot judge, and calibration and session figures recorded at conversion."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data
from edge.classifier import NON_ANSWERS, Classifier
from edge.cli import main as classify_main

pytestmark = pytest.mark.realdata
MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.slow
def test_brain_int8_probabilities_keep_their_resolution_over_300_scans():
    """The int8 sigmoid output gave every Br35H scan 0.996 or 1.0; the logit output keeps them apart."""
    paths = sorted(shared_data("brain_mri", "br35h").glob("*/*"))[::7][:300]
    with Classifier("brain_int8", check_quality=False) as classifier:
        probabilities = [classifier.classify(path).probability for path in paths]
    assert len(paths) == 300 and len(set(probabilities)) >= 50


def test_a_scan_given_to_the_cell_model_and_a_cell_given_to_the_mri_model_get_no_class(capsys):
    scan = shared_data("brain_mri", "brain_tumor_dataset", "yes", "Y1.jpg")
    cell = shared_data("cnmc", "all", "UID_5_1_1_all.webp")
    for model, image in (("leukemia", scan), ("brain", cell)):
        assert classify_main(["--model", model, "--json", str(image)]) == 3
        row = json.loads(capsys.readouterr().out)
        assert row["label"] in NON_ANSWERS and row["reason"]
        assert 0 <= row["probability"] <= 1  # kept for research, under its own key
        assert classify_main(["--model", model, "--json", "--label-all", str(image)]) == 0
        assert json.loads(capsys.readouterr().out)["label"] == row["model_label"]
    # and without the quality gates the domain check still withholds the class
    for model, image in (("leukemia", scan), ("brain", cell)):
        with Classifier(model, check_quality=False) as classifier:
            result = classifier.classify(image)
        assert result.label == "out_of_domain" and "unlike the training images" in result.reason


def test_leukemia_calibration_and_session_rule_as_recorded_at_conversion():
    verification = json.loads((MODELS / "leukemia_verification.json").read_text())
    record = verification["calibration"]["int8"]
    assert record["method"] in ("platt", "temperature")
    assert record["calibrated"]["ece"] < record["uncalibrated"]["ece"]
    session = verification["session"]["int8"]
    assert session["wrong"] == 0  # no out-of-fold patient called wrong by the shipped rule
    sidecar = json.loads((MODELS / "leukemia_int8.json").read_text())
    assert sidecar["output_kind"] == "logit" and sidecar["session"]["rule"] == session["rule"]
    with Classifier("leukemia_int8") as classifier:  # the threshold restated on the calibrated scale
        expected = classifier.calibration.probability(float(np.log(sidecar["threshold_uncalibrated"])
                                                            - np.log1p(-sidecar["threshold_uncalibrated"])))
        assert classifier.threshold == pytest.approx(expected, abs=1e-9)
