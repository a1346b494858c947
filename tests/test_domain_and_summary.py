"""The out-of-domain check on features with a known distribution, its metadata round trip, the
session summary's counts, interval and call, and the decision fraction chosen on known groups."""
import json

import numpy as np
import pytest

from convert.domain import IN_DOMAIN_FLAG_RATE, fitted_check, flag_threshold
from convert.session import choose_session_rule, rule_from_spread
from edge.domain import DomainCheck
from edge.summary import SessionRule, SessionSummary, wilson_interval


def gaussian_features(rng, count: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes, unit covariance, means -2 and +2 on the first of 16 features (plus a shift)."""
    y = rng.integers(0, 2, count)
    features = rng.normal(size=(count, 16)) + shift
    features[:, 0] += np.where(y == 1, 2.0, -2.0)
    return features, y


def test_domain_check_flags_its_share_of_in_domain_and_all_of_a_shifted_distribution():
    rng = np.random.default_rng(0)
    train, y_train = gaussian_features(rng, 4000)
    unseen, _ = gaussian_features(rng, 4000)
    check = fitted_check(train, y_train, [16])
    check = DomainCheck(check.layers, flag_threshold(check.distances(unseen)))
    assert np.mean(check.distances(unseen) > check.threshold) <= IN_DOMAIN_FLAG_RATE
    fresh, _ = gaussian_features(rng, 4000)
    assert abs(np.mean(check.distances(fresh) > check.threshold) - IN_DOMAIN_FLAG_RATE) < 0.015
    shifted, _ = gaussian_features(rng, 500, shift=3.0)
    assert np.mean(check.distances(shifted) > check.threshold) > 0.99
    # the class means are found, and a point at a class mean is at distance about 0
    layer = check.layers[0]
    assert layer.means[1, 0] == pytest.approx(2.0, abs=0.1) and layer.means[0, 0] == pytest.approx(-2.0, abs=0.1)
    assert check.distances(layer.means).max() < 1e-6
    # each layer's distance is scaled by its 95th percentile on the training features
    assert np.mean(layer.distances(train) <= 1.0) == pytest.approx(0.95, abs=0.002)


def test_domain_score_is_the_largest_scaled_distance_over_the_layers():
    """A shift that only one layer's features see is flagged as surely as one in every layer."""
    rng = np.random.default_rng(2)
    train, y_train = gaussian_features(rng, 4000)
    unseen, _ = gaussian_features(rng, 4000)
    sizes = [4, 12]  # the first 4 features as one layer, the other 12 as another
    check = fitted_check(train, y_train, sizes)
    check = DomainCheck(check.layers, flag_threshold(check.distances(unseen)))
    assert [(layer.start, layer.stop) for layer in check.layers] == [(0, 4), (4, 16)]
    early_shift, _ = gaussian_features(rng, 500)
    early_shift[:, 1:4] += 4.0  # only the first layer's features move
    assert np.mean(check.distances(early_shift) > check.threshold) > 0.99
    np.testing.assert_allclose(check.distances(early_shift[:20]),
                               np.maximum(*(layer.distances(early_shift[:20]) for layer in check.layers)))
    with pytest.raises(ValueError, match="do not add up"):
        fitted_check(train, y_train, [4, 4])


def test_domain_check_metadata_round_trip():
    rng = np.random.default_rng(1)
    features, y = gaussian_features(rng, 1000)
    check = fitted_check(features, y, [6, 10], threshold=5.5)
    record = json.loads(json.dumps(check.as_metadata()))
    restored = DomainCheck.from_metadata(record, features=16)
    assert restored.threshold == 5.5
    np.testing.assert_allclose(restored.distances(features[:50]), check.distances(features[:50]), rtol=1e-4)
    layer = record["layers"][0]
    for broken in ({**record, "method": "knn"}, {**record, "threshold": "x"}, {**record, "threshold": float("nan")},
                   {**record, "layers": []}, {**record, "layers": "x"},
                   {**record, "layers": [{**layer, "means": [[1.0, 2.0]]}]},
                   {**record, "layers": [{**layer, "features": [10, 20]}]},
                   {**record, "layers": [{**layer, "scale": 0}]},
                   {**record, "layers": [{k: v for k, v in layer.items() if k != "precision"}]}):
        with pytest.raises(ValueError):
            DomainCheck.from_metadata(broken, features=16)


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


RULE = SessionRule(min_inputs=10, negative_to=0.35, positive_from=0.65)


def test_session_summary_counts_every_kind_of_answer_and_calls_by_the_mean_probability():
    summary = SessionSummary(("hem", "all"), RULE)
    for _ in range(18):
        summary.add("all", 0.8)
    for _ in range(2):
        summary.add("hem", 0.2)
    summary.add("uncertain", 0.5)
    summary.add("out_of_domain", 0.9)
    summary.add("rejected", 0.9)
    summary.add(error=True)
    result = summary.as_dict()
    assert result["images"] == 24 and result["classified"] == 20 and result["errors"] == 1
    assert result["out_of_domain"] == 1 and result["rejected"] == 1 and result["uncertain"] == 1
    assert result["counts"] == {"hem": 2, "all": 18} and result["positive_fraction"] == 0.9
    assert result["positive_fraction_ci95"] == pytest.approx(wilson_interval(18, 20), abs=1e-4)
    # the mean is over the judged inputs (class answers and uncertain ones), not the flagged ones
    assert result["mean_probability"] == pytest.approx((18 * 0.8 + 2 * 0.2 + 0.5) / 21, abs=1e-4)
    assert result["call"] == "all" and ">= 0.65" in result["call_reason"]


def test_session_calls_say_why_they_are_uncertain():
    few = SessionSummary(("hem", "all"), RULE)
    for _ in range(9):
        few.add("all", 0.95)
    assert few.as_dict()["call"] == "uncertain" and "at least 10" in few.as_dict()["call_reason"]
    between = SessionSummary(("hem", "all"), RULE)
    for p in [0.9, 0.2] * 10:
        between.add("all" if p > 0.5 else "hem", p)
    assert between.as_dict()["call"] == "uncertain" and "not <= 0.35 nor >= 0.65" in between.as_dict()["call_reason"]
    never = SessionSummary(("hem", "all"), SessionRule(1, 0.0, 1.0))  # a rule that never calls
    for _ in range(50):
        never.add("all", 1.0)
    assert never.as_dict()["call"] == "uncertain" and "no session call" in never.as_dict()["call_reason"]
    normal = SessionSummary(("hem", "all"), RULE)
    for _ in range(12):
        normal.add("hem", 0.1)
    assert normal.as_dict()["call"] == "hem"
    flagged = SessionSummary(("hem", "all"), RULE)
    for i in range(10):
        flagged.add("out_of_domain" if i < 6 else "all", 0.9)
    assert flagged.as_dict()["call"] == "out_of_domain"
    assert SessionSummary(("hem", "all"), None).as_dict()["call"] == "uncertain"


def _generated_groups(rng, means: dict, cells: int = 40) -> dict:
    """{group: (truth, cells, mean probability, cells at or above 0.5)} from per-cell probabilities."""
    table = {}
    for group, (truth, centre) in means.items():
        p = np.clip(rng.normal(centre, 0.2, cells), 0.001, 0.999)
        table[group] = (truth, cells, float(p.mean()), int(np.sum(p >= 0.5)))
    return table


def test_session_rule_never_calls_a_patient_whose_cells_straddle_the_threshold():
    rng = np.random.default_rng(3)
    centres = {f"n{i}": (0, c) for i, c in enumerate([0.15, 0.2, 0.25, 0.3, 0.35, 0.2, 0.25, 0.3, 0.18, 0.28])}
    centres.update({f"b{i}": (1, c) for i, c in enumerate([0.85, 0.8, 0.75, 0.7, 0.65, 0.8, 0.75, 0.7, 0.82, 0.72])})
    table = _generated_groups(rng, centres)
    fold_of_group = {g: i % 5 for i, g in enumerate(sorted(table))}
    choice = choose_session_rule(table, fold_of_group, ("hem", "all"))
    rule = SessionRule.from_metadata(choice["rule"])
    assert choice["wrong"] == 0 and choice["held_out"]["mean_probability_rule"]["wrong"] == 0
    assert choice["right"] > 0
    for seed in range(20):  # a new patient of either class whose cells sit around the threshold
        straddling = _generated_groups(np.random.default_rng(100 + seed), {"x": (seed % 2, 0.5)})
        truth, n, mean, _ = straddling["x"]
        assert rule.call(n, mean, ("hem", "all"))[0] == "uncertain"


def test_rule_from_spread_keeps_k_standard_deviations_of_the_group_means():
    table = {"n0": (0, 20, 0.2, 0), "n1": (0, 20, 0.4, 0), "b0": (1, 20, 0.7, 0), "b1": (1, 20, 0.9, 0),
             "tiny": (0, 2, 0.95, 0)}
    rule = rule_from_spread(table, minimum=3, k=2.0)  # "tiny" has too few inputs to count
    spread = np.std([0.2, 0.4], ddof=1)
    assert rule.positive_from == pytest.approx(0.3 + 2 * spread, abs=1e-4)
    assert rule.negative_to == pytest.approx(0.8 - 2 * spread, abs=1e-4) and rule.min_inputs == 3
    assert rule_from_spread(table, minimum=3, k=1.0) is None  # levels that cross make no rule


def test_the_held_out_judgement_sets_the_rule_without_the_fold_it_scores():
    labels = ("hem", "all")
    # a normal group in fold 2 looks like the blast groups: chosen without it, the rule calls it wrong
    table = {"n0": (0, 50, 0.2, 0), "n1": (0, 50, 0.25, 0), "n3": (0, 50, 0.3, 0), "n4": (0, 50, 0.22, 0),
             "b0": (1, 50, 0.8, 0), "b1": (1, 50, 0.85, 0), "b3": (1, 50, 0.9, 0), "b4": (1, 50, 0.82, 0),
             "n2": (0, 50, 0.86, 0), "b2": (1, 50, 0.88, 0)}
    fold_of_group = {"n0": 0, "b0": 0, "n1": 1, "b1": 1, "n2": 2, "b2": 2, "n3": 3, "b3": 3, "n4": 4, "b4": 4}
    choice = choose_session_rule(table, fold_of_group, labels)
    assert choice["wrong"] == 0  # set on every group, no level calls n2 wrong
    assert choice["held_out_calls"]["n2"] in ("all", "uncertain")


# -- the shipped models ----------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402

from conftest import synthetic_cell, synthetic_mri  # noqa: E402
from edge.classifier import Classifier  # noqa: E402
from edge.cli import main as classify_main  # noqa: E402
from edge.live import main as live_main  # noqa: E402


@pytest.mark.parametrize("model", ["leukemia_int8", "leukemia_float32", "brain_int8", "brain_float32"])
def test_shipped_models_carry_a_domain_check_a_session_rule_and_an_uncertain_band(model):
    with Classifier(model) as classifier:
        spec = classifier.spec
        early = 2 if model.startswith("leukemia") else 6  # the compact CNN's first two ReLUs, Lite0's first six
        assert spec.domain is not None and len(spec.domain.layers) == early + 1  # and the last features
        assert spec.domain.layers[-1].stop == spec.features.shape[1] and spec.domain.layers[-1].means.shape[0] == 2
        assert spec.session_rule is not None and 0 < spec.uncertain_margin < 0.5
        assert spec.calibration.output_kind == "logit"
        assert spec.display_name(spec.labels[1]) in ("blast", "tumour")
        image = synthetic_cell(1, True, 200) if model.startswith("leukemia") else \
            np.repeat(synthetic_mri(1, True, 200)[:, :, None], 3, axis=2)
        result = classifier.classify(image)
        assert result.domain_score >= 0 and result.out_of_domain == (result.domain_score > spec.domain.threshold)
        assert "domain" in result.timings_ms


@pytest.fixture
def cell_files(tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    for i in range(8):
        Image.fromarray(synthetic_cell(i, i % 2 == 0, size=200)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_classify_summary_line_counts_the_lines_above_it(cell_files, capsys):
    code = classify_main(["--model", "leukemia", "--json", "--summary", str(cell_files)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # the broken file
    rows, summary = lines[:-1], lines[-1]["summary"]
    assert len(rows) == 9 and summary["images"] == 9 and summary["errors"] == 1
    answered = [r for r in rows if "error" not in r]
    assert all("out_of_domain" in r and "domain_score" in r and "probability" in r for r in answered)
    for kind in ("out_of_domain", "rejected", "uncertain"):
        assert summary[kind] == sum(r["label"] == kind for r in answered)
    assert summary["counts"] == {"hem": sum(r["label"] == "hem" for r in answered),
                                 "all": sum(r["label"] == "all" for r in answered)}
    assert summary["call"] in ("hem", "all", "uncertain", "out_of_domain") and summary["call_reason"]


def test_answers_withhold_the_class_near_the_threshold_out_of_domain_or_rejected(cell_files, capsys):
    classify_main(["--model", "leukemia", "--json", "--no-quality", str(cell_files)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "error" not in line]
    with Classifier("leukemia") as classifier:
        threshold, margin = classifier.threshold, classifier.spec.uncertain_margin
    for row in rows:
        assert row["threshold"] == pytest.approx(threshold, abs=1e-6)
        assert row["model_label"] == ("all" if row["probability"] >= threshold else "hem")
        if row["out_of_domain"]:
            assert row["label"] == "out_of_domain" and "unlike the training images" in row["reason"]
        elif abs(row["probability"] - threshold) < margin:
            assert row["label"] == "uncertain" and "threshold" in row["reason"]
        else:
            assert row["label"] == row["model_label"] and row["reason"] is None
            assert row["answer"] == {"all": "blast", "hem": "normal"}[row["label"]]


def test_live_records_carry_the_session_and_its_summary(cell_files, tmp_path):
    (cell_files / "broken.png").unlink()
    log = tmp_path / "live.jsonl"
    assert live_main(["--source", str(cell_files), "--headless", "--model", "leukemia", "--fps", "20",
                      "--session", "slide-7", "--log", str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    frames = [r for r in records if "frame" in r and "event" not in r]
    assert frames and all(r["session"] == "slide-7" and "out_of_domain" in r and "summary" in r for r in frames)
    assert [r["summary"]["images"] for r in frames] == list(range(1, len(frames) + 1))
    stop = records[-1]
    assert stop["event"] == "stop" and stop["session"] == "slide-7" and stop["summary"] == frames[-1]["summary"]


def test_features_output_holds_the_first_two_relu_layers_and_the_last_pooled_features():
    keras = pytest.importorskip("keras")
    from train.model import build_model, with_features, with_mirror_tta

    model = build_model((32, 32, 3), width=4)
    featured, sizes = with_features(model)
    assert sizes == [4, 8, 32]
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    score, features = featured.predict(x, verbose=0)
    np.testing.assert_allclose(score, model.predict(x, verbose=0), atol=1e-6)
    relus = [layer.output for layer in model.layers if isinstance(layer, keras.layers.ReLU)]
    first = keras.Model(model.input, relus[0]).predict(x, verbose=0)
    np.testing.assert_allclose(features[:, :4], first.mean(axis=(1, 2)), atol=1e-5)
    # a mirror-TTA model: each part is the mean over the image and its mirror image
    tta_featured, tta_sizes = with_features(with_mirror_tta(model))
    assert tta_sizes == sizes
    _, tta_features = tta_featured.predict(x, verbose=0)
    _, mirrored = featured.predict(np.ascontiguousarray(x[:, :, ::-1]), verbose=0)
    np.testing.assert_allclose(tta_features, (features + mirrored) / 2, atol=1e-5)
