"""The shipped models on real images from ../shared/data, in all three runtimes: the scores equal
the conversion step's verification on the same reference images (every 10th training image of a
cross-validated model)."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data
from edge.classifier import Classifier
from train.data_root import data_root, resolve

pytestmark = pytest.mark.realdata
ROOT = Path(__file__).resolve().parents[1]
TFLITE_RUNTIME_PYTHON = ROOT / ".venv-tflite-runtime" / "bin" / "python"
PER_MODEL = 24


def _recorded(task: str):
    shared_data()
    verification = json.loads((ROOT / "models" / f"{task}_verification.json").read_text())
    scores = verification["reference_scores"]
    picks = np.linspace(0, len(scores["paths"]) - 1, PER_MODEL).astype(int)
    paths = [resolve(scores["paths"][i], data_root()) for i in picks]
    threshold = json.loads((ROOT / "models" / f"{task}_int8.json").read_text())["threshold"]  # calibrated, as the scores
    return paths, [scores["int8"][i] for i in picks], [scores["labels"][i] for i in picks], threshold


@pytest.mark.parametrize("task", ["brain", "leukemia"])
@pytest.mark.parametrize("runtime", ["ai-edge-litert", "tensorflow"])
def test_int8_scores_equal_the_verification(task, runtime):
    pytest.importorskip("tensorflow" if runtime == "tensorflow" else "ai_edge_litert")
    paths, expected, labels, threshold = _recorded(task)
    with Classifier(task, runtime=runtime) as classifier:
        results = [classifier.classify(p) for p in paths]
    scores = [r.probabilities[classifier.labels[1]] for r in results]
    np.testing.assert_allclose(scores, expected, atol=2e-6)
    predicted = [int(s >= threshold) for s in scores]
    assert [classifier.labels[p] for p in predicted] == [r.model_label for r in results]
    assert np.mean(np.array(predicted) == np.array(labels)) >= 0.6  # a sample of the verification's reference images


@pytest.mark.parametrize("task", ["brain", "leukemia"])
def test_int8_scores_equal_the_verification_in_tflite_runtime(task):
    if not TFLITE_RUNTIME_PYTHON.exists():
        pytest.skip("no .venv-tflite-runtime (make test creates it)")
    paths, expected, _, _ = _recorded(task)
    script = (
        "import json, sys\n"
        "from edge.classifier import Classifier\n"
        f"classifier = Classifier({task!r}, runtime='tflite-runtime')\n"
        "paths = json.loads(sys.stdin.read())\n"
        "print(json.dumps([classifier.classify(p).probabilities[classifier.labels[1]] for p in paths]))\n"
    )
    done = subprocess.run([str(TFLITE_RUNTIME_PYTHON), "-c", script], input=json.dumps(paths), capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    # tflite-runtime 2.14's int8 kernels round differently from ai-edge-litert 2.3 (the runtime of
    # the verification), and the pretrained backbone's first depthwise layer amplifies that: on a
    # quarter of the test split the mean score difference was 0.011 (brain) / 0.020 (leukemia) and
    # labels agreed on 97.6% / 98.1% of images. Exact equality holds only for the verification runtime.
    scores, expected = np.array(json.loads(done.stdout)), np.array(expected)
    _, _, _, threshold = _recorded(task)
    assert np.abs(scores - expected).mean() <= 0.05
    assert np.mean((scores >= threshold) == (expected >= threshold)) >= 0.9


@pytest.mark.parametrize("task, folder", [("brain", ("brain_mri",)), ("leukemia", ("cnmc",))])
def test_real_images_pass_their_models_quality_gates(task, folder):
    import random

    from edge.images import load_image
    from edge.quality import quality_issues

    paths = sorted(p for p in shared_data(*folder).rglob("*") if p.is_file())
    sample = random.Random(1).sample(paths, 60)
    spec_name = "brain_mri" if task == "brain" else "cnmc_cell"
    flagged = {str(p): quality_issues(load_image(p), spec_name) for p in sample}
    assert not {p: i for p, i in flagged.items() if i}
