"""Class labels of each model, defined once for training, conversion and the device.

Index 0 is the negative class, index 1 the positive class the model's sigmoid scores.
"""

LABELS = {
    "brain": ("no", "yes"),  # yes = tumour visible on the MRI slice
    "leukemia": ("hem", "all"),  # all = leukemic B-lymphoblast, hem = normal B-lymphoid cell
}

POSITIVE_INDEX = 1

# What a person reads; the codes above stay in JSON and CSV for scripts. A model's sidecar carries its
# own (display_names); these are the defaults, and the words for the answers that are not a class.
DISPLAY_NAMES = {
    "no": "no tumour", "yes": "tumour",
    "hem": "normal", "all": "blast",
    "uncertain": "uncertain", "out_of_domain": "out of domain", "rejected": "rejected",
}


def labels_for(task: str) -> tuple[str, str]:
    try:
        return LABELS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(LABELS)}") from None
