"""Loaders and folds on the real data in ../shared/data (skipped with a reason when absent)."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from conftest import shared_data
from edge.images import load_image
from edge.preprocess import default_spec, preprocess
from train.crossval import group_folds
from edge.datasets import find_brain_images, find_cnmc_images

pytestmark = pytest.mark.realdata


def test_brain_sets_load_completely_in_every_format():
    kaggle = find_brain_images([shared_data("brain_mri", "brain_tumor_dataset")])
    br35h = find_brain_images([shared_data("brain_mri", "br35h")])
    assert Counter(s.label for s in kaggle) == {1: 155, 0: 98}
    assert Counter(s.label for s in br35h) == {1: 1107, 0: 1157}
    for sample in kaggle:  # every mode and size of the Kaggle set decodes and preprocesses
        assert preprocess(load_image(sample.path), default_spec("brain")).shape == (128, 128, 1)


def test_cnmc_patients_and_patient_folds():
    samples = find_cnmc_images(shared_data("cnmc"))
    assert Counter(s.label for s in samples) == {1: 2213, 0: 909}
    patients = defaultdict(set)
    for s in samples:
        patients[s.label].add(s.patient)
    assert len(patients[1]) == 27 and len(patients[0]) == 14
    groups = np.array([s.patient for s in samples])
    labels = np.array([s.label for s in samples])
    fold_of = group_folds(labels, groups, 5, seed=0)
    folds = defaultdict(set)
    for group, fold in zip(groups, fold_of):
        folds[group].add(fold)
    assert all(len(f) == 1 for f in folds.values()), "a patient is in two folds"
    for fold in range(5):
        assert (labels[fold_of == fold] == 0).any(), f"no normal cells held out in fold {fold}"


def test_cnmc_cells_preprocess_as_colour():
    sample = find_cnmc_images(shared_data("cnmc"))[0]
    out = preprocess(load_image(sample.path), default_spec("leukemia"))
    assert out.shape == (96, 96, 3)
    assert np.abs(out[:, :, 0] - out[:, :, 2]).mean() > 0.01  # stained cell, not grey
