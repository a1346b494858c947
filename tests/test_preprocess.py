import numpy as np
import pytest

from conftest import synthetic_cell, synthetic_mri
from edge.preprocess import default_spec, preprocess


def _rgb(gray):
    return np.repeat(gray[:, :, None], 3, axis=2)


def test_output_shape_range_and_determinism():
    for task, rgb in (("brain", _rgb(synthetic_mri(1, True))), ("leukemia", synthetic_cell(1, True))):
        spec = default_spec(task)
        first, second = preprocess(rgb, spec), preprocess(rgb.copy(), spec)
        channels = 1 if task == "brain" else 3
        assert first.shape == (spec["size"], spec["size"], channels) and first.dtype == np.float32
        assert 0.0 <= first.min() and first.max() <= 1.0
        assert np.array_equal(first, second)


def test_brain_crop_centres_the_head_wherever_it_is():
    centred = preprocess(_rgb(synthetic_mri(2, False, size=240)), default_spec("brain"))
    shifted = preprocess(_rgb(synthetic_mri(2, False, size=240, offset=(40, -50))), default_spec("brain"))
    for out in (centred, shifted):
        mask = out[:, :, 0] > 0.2
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        # the head fills the crop along its long side and sits in the middle of the short side
        assert rows[0] <= 3 and rows[-1] >= out.shape[0] - 4
        assert abs((cols[0] + cols[-1]) / 2 - out.shape[1] / 2) <= 3


def test_brain_crop_ignores_specks_and_survives_a_blank_image():
    gray = synthetic_mri(3, False, size=200)
    gray[2:4, 2:4] = 255  # a speck in the corner is not head
    with_speck = preprocess(_rgb(gray), default_spec("brain"))
    gray[2:4, 2:4] = 0
    assert np.abs(with_speck - preprocess(_rgb(gray), default_spec("brain"))).max() < 0.05
    blank = preprocess(np.zeros((50, 60, 3), np.uint8), default_spec("brain"))
    assert blank.shape == (128, 128, 1) and blank.max() == 0


def test_brain_without_head_crop_keeps_the_whole_slice_centred():
    gray = synthetic_mri(2, False, size=240)[:, :200]  # a wide-open 240x200 slice
    gray[0:6, 0:6] = 255  # a corner that the head crop would drop
    whole = preprocess(_rgb(gray), {"name": "brain_mri", "size": 120, "crop": "none"})
    # 240 rows fill the square; the 200 columns sit in its middle with 20 black pixels each side (10 at 120 px)
    assert whole[:, :9].max() == 0 and whole[:, -9:].max() == 0
    assert whole[0:2, 10:12].min() > 0.8  # the bright corner is kept
    assert not np.array_equal(whole, preprocess(_rgb(gray), {"name": "brain_mri", "size": 120}))
    with pytest.raises(ValueError, match="unknown crop"):
        from edge.preprocess import check_preprocessing

        check_preprocessing({"name": "brain_mri", "size": 120, "crop": "tight"})


def test_cell_crops_tight_and_fixed():
    rgb = np.zeros((450, 450, 3), np.uint8)
    rgb[100:160, 200:260] = (150, 100, 180)  # a 60 px cell off centre
    tight = preprocess(rgb, {"name": "cnmc_cell", "size": 64, "crop": "tight"})
    fixed = preprocess(rgb, {"name": "cnmc_cell", "size": 64, "crop": "fixed"})
    assert (tight.max(axis=2) > 0.1).mean() > 0.8  # cell fills the tight crop
    assert 0.01 < (fixed.max(axis=2) > 0.1).mean() < 0.05  # fixed 384 px window keeps its scale
    with pytest.raises(ValueError, match="unknown cell crop"):
        preprocess(rgb, {"name": "cnmc_cell", "size": 64, "crop": "round"})


def test_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB"):
        preprocess(np.zeros((10, 10), np.uint8), default_spec("brain"))


def test_stain_normalisation_removes_tint_and_keeps_background_black():
    cell = synthetic_cell(8, True, size=300)
    tinted = np.clip(cell.astype(float) * (1.3, 0.8, 1.1), 0, 255).astype(np.uint8)
    spec = {"name": "cnmc_cell", "size": 64, "crop": "tight", "stain": "channel-mean"}
    plain, shifted = preprocess(cell, spec), preprocess(tinted, spec)
    assert np.abs(plain - shifted).mean() < 0.01
    assert plain[0, 0].max() == 0 and plain[-1, -1].max() == 0  # corners are background
