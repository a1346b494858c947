"""Find labelled images in the public dataset layouts.

Brain MRI (Kaggle layout): a folder with ``yes/`` and ``no/``; several folders can be combined.
C-NMC 2019, either layout, recursively:
  - folders named ``all/`` and ``hem/`` (the official ``training_data/fold_*/{all,hem}`` or flat);
  - the official preliminary test set: a csv with ``Patient_ID,new_names,labels`` (1 = all, 0 = hem)
    beside or above the folder of renamed images (``1.bmp``, ``2.bmp`` ...).
The patient comes from the original file name ``UID_<patient>_<image>_<cell>_<class>``.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edge.images import is_image_file
from edge.labels import labels_for


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # index into edge.labels.LABELS[task]
    patient: str | None = None


PATIENT_PATTERN = re.compile(r"^UID_(H?\d+)_", re.IGNORECASE)


def patient_from_name(name: str) -> str:
    match = PATIENT_PATTERN.match(os.path.basename(name))
    if not match:
        raise ValueError(f"{name}: file name does not follow UID_<patient>_<image>_<cell>_<class>")
    return match.group(1).upper()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p.name))


def find_brain_images(roots: list[str | os.PathLike]) -> list[Sample]:
    names = labels_for("brain")
    samples = []
    for root in map(Path, roots):
        found = False
        for label, name in enumerate(names):
            folder = root / name
            if folder.is_dir():
                found = True
                samples += [Sample(str(p), label) for p in _images_in(folder)]
        if not found:
            raise FileNotFoundError(f"{root}: expected sub-folders {names[1]}/ and {names[0]}/ (Kaggle layout)")
    return samples


def _read_label_csv(csv_path: Path) -> dict[str, tuple[int, str]]:
    """new image name -> (label, patient) from the official prelim-phase labels csv."""
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    result = {}
    for row in rows:
        row = {key.strip().lower(): value.strip() for key, value in row.items() if key}
        result[row["new_names"]] = (int(row["labels"]), patient_from_name(row["patient_id"]))
    return result


def _is_label_csv(csv_path: Path) -> bool:
    with open(csv_path, newline="") as handle:
        header = handle.readline().lower()
    return "new_names" in header and "labels" in header


def find_cnmc_images(root: str | os.PathLike) -> list[Sample]:
    names = labels_for("leukemia")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    samples = []
    renamed: dict[str, tuple[int, str]] = {}
    for folder, _, files in sorted(os.walk(root)):
        folder = Path(folder)
        for csv_name in (f for f in files if f.lower().endswith(".csv")):
            if _is_label_csv(folder / csv_name):
                renamed.update(_read_label_csv(folder / csv_name))
        if folder.name.lower() in names:
            label = names.index(folder.name.lower())
            samples += [Sample(str(p), label, patient_from_name(p.name)) for p in _images_in(folder)]
    if renamed:
        for folder, _, files in sorted(os.walk(root)):
            if Path(folder).name.lower() in names:
                continue
            for name in sorted(files):
                if name in renamed and is_image_file(name):
                    label, patient = renamed[name]
                    samples.append(Sample(str(Path(folder) / name), label, patient))
    if not samples:
        raise FileNotFoundError(f"{root}: no C-NMC images (expected all/ and hem/ folders or a labels csv)")
    return samples
