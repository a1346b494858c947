from collections import defaultdict

import numpy as np
from PIL import Image, ImageEnhance

from conftest import synthetic_mri
from train.datasets import Sample
from train.splits import difference_hash, make_split, near_duplicate_groups, split_groups


def _sides(split):
    sides = defaultdict(set)
    for row in split["samples"]:
        sides[row["group"]].add(row["subset"])
    return sides


def test_patients_never_cross_subsets_and_split_is_reproducible():
    samples = [Sample(f"p{p}_{i}.bmp", int(p < 12), str(p)) for p in range(20) for i in range(3 + p % 5)]
    split = make_split("leukemia", samples, seed=3)
    assert all(len(subsets) == 1 for subsets in _sides(split).values())
    assert {r["subset"] for r in split["samples"]} == {"train", "val", "test"}
    assert make_split("leukemia", samples, seed=3)["samples"] == split["samples"]
    assert make_split("leukemia", samples, seed=4)["samples"] != split["samples"]
    for part in ("train", "val", "test"):  # stratified: both classes everywhere
        assert len(split["summary"][part]["per_label"]) == 2


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


def test_brain_split_keeps_groups_together():
    labels = [i % 2 for i in range(60)]
    groups = [f"dup{i // 3}" for i in range(60)]
    subsets = split_groups(labels, groups, seed=0)
    by_group = defaultdict(set)
    for group, subset in zip(groups, subsets):
        by_group[group].add(subset)
    assert all(len(s) == 1 for s in by_group.values())
