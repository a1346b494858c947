import numpy as np
from PIL import Image, ImageEnhance

from conftest import synthetic_mri
from train.splits import difference_hash, near_duplicate_groups


def test_near_duplicates_share_a_group():
    scans = [synthetic_mri(seed, seed % 2 == 0, offset=(seed * 7 % 30 - 15, seed * 11 % 30 - 15)) for seed in range(6)]
    twins = []
    for gray in scans:
        image = Image.fromarray(gray)
        recontrasted = ImageEnhance.Contrast(image).enhance(1.4)
        twins.append(np.asarray(recontrasted.resize((150, 150)).convert("RGB")))
    rgbs = [np.repeat(g[:, :, None], 3, axis=2) for g in scans] + twins
    groups = near_duplicate_groups(np.stack([difference_hash(rgb) for rgb in rgbs]))
    for i in range(6):
        assert groups[i] == groups[i + 6], f"scan {i} and its re-encoded twin were separated"
    assert len(set(groups[:6])) == 6, "different scans were merged"

