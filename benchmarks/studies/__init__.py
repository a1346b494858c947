"""Desktop studies, run from the checkout (`python -m benchmarks.studies.<name>`): each measures one
question and writes its report beside the benchmark command (benchmarks/*.md). They import training,
conversion and the real data, so the device wheel does not carry them."""
