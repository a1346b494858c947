"""Desktop training of the brain MRI and C-NMC leukemia classifiers (needs the `train` extra)."""
