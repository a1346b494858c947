"""The interpreter's thread count is chosen by measurement, not guessed: by default the fastest
measured for the model on this machine; a larger --threads is allowed and said. No timing is
asserted (timings here are noisy): only which of the measured counts is taken."""
from __future__ import annotations

import json
import os

import pytest

from edge import classifier as classifier_module
from edge.classifier import Classifier, fastest, thread_candidates


def test_candidates_are_one_two_four_and_all_cores_up_to_the_cores():
    counts = thread_candidates()
    cores = os.cpu_count() or 1
    assert counts[0] == 1 and counts == sorted(set(counts)) and max(counts) == cores
    assert set(counts) <= {1, 2, 4, cores}
    assert thread_candidates(limit=1) == [1]


def test_fastest_takes_the_fewest_threads_within_the_margin():
    assert fastest({1: 0.06, 2: 0.65}) == 1
    assert fastest({1: 10.0, 2: 6.0, 4: 5.8}) == 2  # 4 threads are not 10% faster than 2
    assert fastest({1: 10.0, 2: 6.0, 4: 4.0}) == 4
    assert fastest({1: 1.0, 2: 0.95}) == 1


@pytest.mark.parametrize("model", ["brain", "brain_float32"])
def test_the_default_thread_count_is_the_fastest_measured(model, monkeypatch):
    monkeypatch.setattr(classifier_module, "_THREAD_TIMINGS", {})
    with Classifier(model) as classifier:
        timings = classifier.thread_timings
        if len(thread_candidates()) == 1:
            assert classifier.threads == 1
            return
        assert set(timings) == set(thread_candidates()) and all(ms > 0 for ms in timings.values())
        assert classifier.threads in timings and classifier.threads == fastest(timings)
    with Classifier(model) as again:  # measured once per process: the second one reuses the figures
        assert again.thread_timings is timings and again.threads == classifier.threads


def test_a_given_thread_count_is_used_and_measured_only_when_asked(monkeypatch):
    monkeypatch.setattr(classifier_module, "_THREAD_TIMINGS", {})
    with Classifier("brain", threads=3) as classifier:
        assert classifier.threads == 3 and classifier.thread_timings is None
        timings = classifier.check_threads()
        assert 3 in timings and 1 in timings


def test_edge_live_says_when_threads_are_above_the_fastest(monkeypatch):
    from edge.classifier import thread_report

    class Measured:
        model_path = type("P", (), {"name": "leukemia_int8.tflite"})()

        def __init__(self, timings):
            self.timings = timings

        def check_threads(self):
            return self.timings

    line = thread_report(Measured({1: 0.06, 2: 0.65}), 2)
    assert "--threads 2 is above the fastest measured" in line and "1: 0.06 ms" in line and "using 2 as asked" in line
    assert thread_report(Measured({1: 10.0, 2: 5.0}), 2) is None
    assert thread_report(Measured({1: 0.06, 2: 0.65}), None) is None
    assert thread_report(Measured({1: 0.06, 2: 0.65}), 1) is None


def test_edge_classify_says_when_threads_are_above_the_fastest(monkeypatch, tmp_path, capsys):
    from PIL import Image

    from conftest import synthetic_cell
    from edge.cli import main

    image = tmp_path / "cell.png"
    Image.fromarray(synthetic_cell(1, blast=True)).save(image)
    monkeypatch.setattr(Classifier, "check_threads", lambda self: {1: 0.06, 2: 0.65})
    main(["--model", "leukemia", "--threads", "2", "--json", str(image)])
    out, err = capsys.readouterr()
    assert err.startswith("edge-classify: --threads 2 is above the fastest measured for leukemia_int8.tflite")
    assert json.loads(out.splitlines()[0])["path"] == str(image)  # classified all the same
    main(["--model", "leukemia", "--threads", "1", "--json", str(image)])
    assert "--threads" not in capsys.readouterr().err
