"""The fast device pipeline gives exactly what the straightforward one gave: the same model input
(np.array_equal, float and quantised) and the same quality-gate decisions, on generated arrays and on
the real images of both tasks. tests/reference/ holds the modules as they were before the pipeline
was made cheaper (commit 418648e), as the yardstick. One input is defined anew: a field cell at the
training magnification (edge.field.model_input), tested against the reference within a stated tolerance."""
from __future__ import annotations

import glob

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import shared_data, synthetic_cell, synthetic_mri
from edge.preprocess import content_box, preprocess, preprocess_uint8, resize_bilinear
from edge.quality import analysis_copy, measure, quality_issues
from reference import preprocess_418648e as reference
from reference import quality_418648e as reference_quality

CELL_SPECS = [{"name": "cnmc_cell", "size": 96, "crop": "fixed"}, {"name": "cnmc_cell", "size": 96, "crop": "tight"},
              {"name": "cnmc_cell", "size": 64, "crop": "fixed", "stain": "channel-mean"}]
BRAIN_SPECS = [{"name": "brain_mri", "size": 128}, {"name": "brain_mri", "size": 128, "crop": "none"},
               {"name": "brain_mri", "size": 192}]
REAL_STEP = 40  # every 40th real image (about 140 of them); the whole sets were compared once, see benchmarks


def _framed(rgb: np.ndarray, size=(640, 480)) -> np.ndarray:
    """The image on a black camera frame, as a microscope camera sees a segmented cell."""
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    height, width = min(size[1], rgb.shape[0]), min(size[0], rgb.shape[1])
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    frame[top:top + height, left:left + width] = rgb[:height, :width]
    return frame


def test_resize_bilinear_is_pillows_resize_wherever_the_content_is():
    rng = np.random.default_rng(3)
    for case in range(400):
        height, width = (int(v) for v in rng.integers(1, 500, 2))
        shape = (height, width, 3) if case % 3 else (height, width)
        pixels = np.zeros(shape, np.uint8)
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1, x1 = int(rng.integers(y0, height + 1)), int(rng.integers(x0, width + 1))
        pixels[y0:y1, x0:x1] = rng.integers(0, 256, pixels[y0:y1, x0:x1].shape)
        if case % 2:  # sizes whose scale is exact in binary (the fast path), else any size
            factor = [2, 4, 2.5, 1.7578125, 0.5, 1][case % 6]
            size = (max(1, int(width / factor)), max(1, int(height / factor)))
        else:
            size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        expected = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
        assert np.array_equal(resize_bilinear(pixels, size), expected), (shape, size, (x0, y0, x1, y1))


def test_content_box_is_the_bounding_box_of_the_mask():
    pixels = np.zeros((40, 50, 3), np.uint8)
    assert content_box(pixels) is None
    pixels[5, 7, 2] = 11
    pixels[30, 44, 0] = 3
    assert content_box(pixels) == (7, 5, 45, 31)
    assert content_box(pixels, 10) == (7, 5, 8, 6)


@pytest.mark.parametrize("spec", CELL_SPECS + BRAIN_SPECS)
def test_generated_images_give_the_reference_model_input(spec):
    images = [synthetic_cell(seed, seed % 2 == 0, size=size) for seed, size in ((1, 120), (2, 450), (3, 300))]
    images += [np.repeat(synthetic_mri(seed, True, size=size)[:, :, None], 3, axis=2) for seed, size in ((4, 180), (5, 512))]
    images += [_framed(image) for image in images[:3]] + [np.zeros((50, 60, 3), np.uint8)]
    edge = np.zeros((300, 300, 3), np.uint8)
    edge[:40, 250:] = 180  # content against the image's border: the window pads with black
    images.append(edge)
    for rgb in images:
        got = preprocess(rgb, spec)
        assert got.dtype == np.float32 and np.array_equal(got, reference.preprocess(rgb, spec))
        assert np.array_equal(preprocess_uint8(rgb, spec).astype(np.float32) / 255.0, got)


def test_the_input_tensor_is_quantize_of_the_reference_input():
    from edge.classifier import Classifier
    from edge.interpreter import quantize
    with Classifier("brain", threads=1) as classifier:
        for seed in range(3):
            rgb = np.repeat(synthetic_mri(seed, seed == 1, size=200)[:, :, None], 3, axis=2)
            pixels, _ = classifier._prepare(rgb, type("Watch", (), {"lap": lambda self, stage: None})())
            expected = quantize(reference.preprocess(rgb, classifier.preprocessing)[None], classifier._input)
            assert np.array_equal(classifier._input_tensor(pixels[None]), expected)
            assert np.array_equal(classifier._input_table[pixels[None]], expected)


def _variants(rgb: np.ndarray):
    yield rgb
    small = np.asarray(reference_quality.analysis_copy(rgb))
    yield np.asarray(Image.fromarray(small).filter(ImageFilter.GaussianBlur(2)))  # the thresholds' blurred set
    yield np.repeat(rgb.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)  # grey
    yield _framed(rgb)


def _same_gates(rgb: np.ndarray) -> None:
    assert np.array_equal(np.asarray(analysis_copy(rgb)), np.asarray(reference_quality.analysis_copy(rgb)))
    figures, expected = measure(rgb), reference_quality.measure(rgb)
    for name, value in expected.items():  # integer sums instead of float32 ones: equal to float32 rounding
        assert figures[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    for task in ("brain_mri", "cnmc_cell"):
        assert quality_issues(rgb, task) == reference_quality.quality_issues(rgb, task)


def test_generated_images_get_the_reference_gate_decisions():
    images = [synthetic_cell(6, True, size=300), np.repeat(synthetic_mri(6, True, size=256)[:, :, None], 3, axis=2),
              np.zeros((300, 300, 3), np.uint8), np.full((300, 300, 3), 255, np.uint8), np.full((2, 3, 3), 9, np.uint8)]
    for rgb in images:
        for variant in _variants(rgb):
            _same_gates(variant)


@pytest.mark.realdata
@pytest.mark.parametrize("folder, specs", [("cnmc", CELL_SPECS), ("brain_mri", BRAIN_SPECS)])
def test_real_images_give_the_reference_model_input_and_gate_decisions(folder, specs):
    root = shared_data(folder)
    paths = sorted(glob.glob(f"{root}/**/*.*", recursive=True))[::REAL_STEP]
    assert len(paths) > 50
    from edge.images import load_image
    for path in paths:
        rgb = load_image(path)
        for spec in specs:
            assert np.array_equal(preprocess(rgb, spec), reference.preprocess(rgb, spec)), (path, spec)
        for variant in _variants(rgb):
            _same_gates(variant)


# Field cells at the training magnification: largest and mean (over cells) of the per-cell mean
# |model_input - reference preprocessing of the enlarged crop|, 0..255 levels, per CELL_SPECS entry;
# measured on all 2466 cells of the 200 fields: 2.29 / 0.78, 3.82 / 1.15, 1.27 / 0.50.
FIELD_INPUT_TOLERANCE = [(2.5, 1.0), (4.5, 1.5), (2.0, 0.8)]


def _not_focus(issues: list[str]) -> list[str]:
    """The gates' reasons without their figures, the focus gate left out."""
    return [issue.split(" (")[0] for issue in issues if "focus" not in issue]


def _centre(pixels: np.ndarray) -> np.ndarray:
    weight = pixels.astype(np.float64).sum(axis=2)
    ys, xs = np.indices(weight.shape)
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


@pytest.mark.realdata
def test_real_smear_field_crops_give_the_reference_model_input():
    """A field crop at the camera's scale (no red-cell scale yet) is preprocessed as any image:
    bit-identical to the reference. At the training magnification the field cell's input is defined
    anew (edge.field.model_input, resampled once from the small crop): it is the reference's
    preprocessing of the crop enlarged by rescale_crops to within interpolation (FIELD_INPUT_TOLERANCE),
    with the same centre (within half a model pixel), and the gates' copy is the reference's analysis
    copy of the enlarged crop, same size, within 1 level, with the same colour, contrast and
    saturation decisions (its sharpness reads higher: one resampling smooths less than two;
    benchmarks/PIPELINE_SPEED.md section 3)."""
    cv2 = pytest.importorskip("cv2")  # noqa: F841  (field mode needs OpenCV)
    from edge.field import cell_crops, estimate_um_per_pixel, find_white_cells, model_input, rescale_crops
    from edge.images import load_image
    paths = sorted(glob.glob(f"{shared_data('blood_smear_fields')}/*/*.jpg"))[::10]
    differences = [[] for _ in CELL_SPECS]
    for path in paths:
        rgb = load_image(path)
        cells = find_white_cells(rgb)
        crops = cell_crops(rgb, cells)
        scale = estimate_um_per_pixel(rgb, cells)
        for crop in crops:
            assert np.array_equal(preprocess(crop, CELL_SPECS[0]), reference.preprocess(crop, CELL_SPECS[0])), path
            assert quality_issues(crop, "cnmc_cell") == reference_quality.quality_issues(crop, "cnmc_cell")
        for crop, enlarged in zip(crops, rescale_crops(crops, scale)):
            for i, spec in enumerate(CELL_SPECS):
                pixels, copy = model_input(crop, scale, spec)
                expected = np.rint(reference.preprocess(enlarged, spec) * 255)
                assert pixels.shape == expected.shape and pixels.dtype == np.uint8
                differences[i].append(np.abs(pixels - expected).mean())
                if i == 0:
                    assert np.abs(_centre(pixels) - _centre(expected)).max() <= 0.5, path
            before = np.asarray(reference_quality.analysis_copy(enlarged))  # copy: the same for every spec
            assert copy.shape == before.shape and np.abs(copy.astype(np.int16) - before).mean() <= 1.0, path
            assert _not_focus(quality_issues(copy, "cnmc_cell")) == \
                _not_focus(reference_quality.quality_issues(enlarged, "cnmc_cell")), path
    assert len(differences[0]) > 200
    for spec, values, (largest, mean) in zip(CELL_SPECS, differences, FIELD_INPUT_TOLERANCE):
        assert max(values) <= largest and np.mean(values) <= mean, (spec, max(values), np.mean(values))


def test_the_pipeline_runs_without_opencv(tmp_path):
    """A device without the camera extra: numpy and Pillow only, both tasks."""
    import subprocess
    import sys
    from pathlib import Path

    Image.fromarray(synthetic_cell(4, True, size=300)).save(tmp_path / "cell.png")
    Image.fromarray(synthetic_mri(4, True, size=240)).save(tmp_path / "mri.png")
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'cv2':\n"
        "            raise ImportError('OpenCV is not installed on this device')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge.classifier import Classifier\n"
        f"for model, image in (('leukemia', {str(tmp_path / 'cell.png')!r}), ('brain', {str(tmp_path / 'mri.png')!r})):\n"
        "    result = Classifier(model).classify(image)\n"
        "    print(model, result.model_label, 'cv2' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0].startswith("leukemia ") and lines[1].startswith("brain ") and all(l.endswith("False") for l in lines[:2])
