# Fresh machine: `make demo` (set up, check the shipped models) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
TFLITE_VENV := .venv-tflite-runtime
ONNX_VENV := .venv-onnx
BENCH := runs/bench
DATA ?= ../shared/data
BIN := $(VENV)/bin
DEMO_BLURRED := runs/demo/blurred_cell.png

.PHONY: setup test test-fast demo models brain-model leukemia-model leukemia-experiments brain-experiments backbone-arrays backbone-runs backbone-tables benchmark peers live-benchmark domain-benchmark bundle bundle-host verify-arm64

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[edge,camera,dicom,report,train,benchmark,dev]'
	touch $@

# tflite-runtime 2.14 is built against numpy 1.x, so it gets its own environment.
$(TFLITE_VENV)/.installed:
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q 'tflite-runtime==2.14.0' 'numpy<2' 'Pillow>=10'
	touch $@

# pytest-xdist: one worker per core; the tests that share the tiny trained run stay on one worker.
test: setup $(TFLITE_VENV)/.installed
	$(BIN)/python -m pytest -n auto --dist loadgroup

# Between two edits: leaves out the tests marked slow (they train networks, drive the browser, build
# wheels and bundles, or read the full data).
test-fast: setup $(TFLITE_VENV)/.installed
	$(BIN)/python -m pytest -n auto --dist loadgroup -m "not slow"

# The demo's images are training images (the shipped models were trained on all of the data): the
# figures that say what to expect on new patients and scans are the out-of-fold ones in the model cards.
# edge-classify exits 3 when some input gets no class (uncertain, out of domain, rejected): shown, not a failure.
$(DEMO_BLURRED): | setup
	mkdir -p $(dir $@)
	$(BIN)/python -c "from PIL import Image, ImageFilter; Image.open('$(DATA)/cnmc/all/UID_5_1_1_all.webp').filter(ImageFilter.GaussianBlur(6)).save('$@')"

demo: setup $(DEMO_BLURRED)
	@echo "== 1. The shipped models are intact and score as they did when converted"
	$(BIN)/python -m convert.check_models models
	@echo; echo "== 2. Single MRI slices. Training images: the model has seen them. On scans it never saw, see models/brain_MODEL_CARD.md"
	$(BIN)/edge-classify --model brain $(DATA)/brain_mri/brain_tumor_dataset/yes/Y1.jpg $(DATA)/brain_mri/brain_tumor_dataset/yes/Y10.jpg "$(DATA)/brain_mri/brain_tumor_dataset/no/1 no.jpeg" "$(DATA)/brain_mri/brain_tumor_dataset/no/10 no.jpg" || [ $$? -eq 3 ]
	@echo; echo "== 3. Things the cell model cannot judge get no class, and say why: an MRI slice and a blurred cell"
	$(BIN)/edge-classify --model leukemia "$(DATA)/brain_mri/brain_tumor_dataset/yes/Y1.jpg" $(DEMO_BLURRED) || [ $$? -eq 3 ]
	@echo; echo "== 4. One patient's 68 cells as a session (patient H12, normal; training images). Per-cell lines cut to the last 5."
	@echo "   The session is called by its mean probability, with levels at which no patient out of fold was called wrong; see models/leukemia_MODEL_CARD.md"
	$(BIN)/edge-classify --model leukemia --summary "$(DATA)/cnmc/hem/UID_H12_*" | tail -n 6

# Reproduce the shipped models from the real data (2-core CPU; the brain model's training needs a GPU
# machine with PyTorch, see brain-model below). Every choice was made by 5-fold
# cross-validation grouped by patient / near-duplicate group: `make leukemia-experiments` and
# `make brain-experiments` rerun the compared recipes (leukemia about 20 minutes each, 35 with stain jitter, 9 at 64 px, 34 at 128; brain about 12, 40 at 192 px and 32 epochs) and
# write the comparison tables; the *-model targets reuse the chosen recipe's CV from runs/cv, train it on
# all of the data and convert it.
models: brain-model leukemia-model

LEUKEMIA_CV := $(BIN)/python -m train leukemia --cv 5 --data $(DATA)/cnmc --epochs 24
LEUKEMIA_RUNS := runs/cv/fixed_basic runs/cv/tight_basic runs/cv/fixed_basic_norm runs/cv/fixed_stain runs/cv/fixed_stain_blur
BRAIN_CV := $(BIN)/python -m train brain --cv 5 --data $(DATA)/brain_mri/brain_tumor_dataset --data $(DATA)/brain_mri/br35h

leukemia-experiments: setup
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_basic --cell-crop fixed
	$(LEUKEMIA_CV) --cv-only --out runs/cv/tight_basic --cell-crop tight
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_basic_norm --cell-crop fixed --stain-norm
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain --cell-crop fixed --augment stain
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain_blur --cell-crop fixed --augment stain_blur
	mkdir -p models/training/leukemia
	$(BIN)/python -m train.compare_cv $(LEUKEMIA_RUNS) --out models/training/leukemia/COMPARISON.md
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain_blur_64 --cell-crop fixed --augment stain_blur --size 64
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain_blur_128 --cell-crop fixed --augment stain_blur --size 128
	$(BIN)/python -m train.compare_cv runs/cv/fixed_stain_blur_64 runs/cv/fixed_stain_blur runs/cv/fixed_stain_blur_128 --out models/training/leukemia/SIZE.md
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain_blur_balanced --cell-crop fixed --augment stain_blur --group-balance
	$(LEUKEMIA_CV) --cv-only --out runs/cv/fixed_stain_blur_ema --cell-crop fixed --augment stain_blur --ema 0.995
	$(BIN)/python -m train.compare_cv runs/cv/fixed_stain_blur runs/cv/fixed_stain_blur_balanced runs/cv/fixed_stain_blur_ema --out models/training/leukemia/WEIGHTING.md

leukemia-model: setup
	$(LEUKEMIA_CV) --out runs/cv/fixed_stain_blur --cell-crop fixed --augment stain_blur
	$(BIN)/python -m convert runs/cv/fixed_stain_blur --out models --name leukemia
	mkdir -p models/training/leukemia
	cp runs/cv/fixed_stain_blur/cv.md runs/cv/fixed_stain_blur/cv.json runs/cv/fixed_stain_blur/config.json models/training/leukemia/

brain-experiments: setup
	$(BRAIN_CV) --epochs 24 --cv-only --out runs/cv/brain_128
	$(BRAIN_CV) --epochs 24 --cv-only --out runs/cv/brain_128_light --augment light
	$(BRAIN_CV) --epochs 24 --cv-only --out runs/cv/brain_160 --size 160
	$(BRAIN_CV) --epochs 24 --tta --cv-only --out runs/cv/brain_160_light --size 160 --augment light
	$(BRAIN_CV) --epochs 32 --tta --cv-only --out runs/cv/brain_192_e32 --size 192
	$(BRAIN_CV) --epochs 24 --cv-only --out runs/cv/brain_128_light_whole --augment light --brain-crop none
	mkdir -p models/training/brain
	$(BIN)/python -m train.compare_cv runs/cv/brain_128 runs/cv/brain_128_light runs/cv/brain_160 runs/cv/brain_160_light runs/cv/brain_192_e32 --out models/training/brain/COMPARISON.md

# Compact CNN against ImageNet EfficientNet-Lite0 on the same folds, trained in PyTorch on a GPU machine
# (train/torch_cv.py; Lite0 in Keras takes tens of minutes per fold on 2 cores): `make backbone-arrays`
# here, `make backbone-runs` where PyTorch and a GPU are (runs/gpu carried there; about 5 minutes on an
# H200), `make backbone-tables` here.
GPU_PYTHON ?= python3
backbone-arrays: setup
	$(BIN)/python -m train.torch_cv export brain --data $(DATA)/brain_mri/brain_tumor_dataset --data $(DATA)/brain_mri/br35h --out runs/gpu/brain_128.npz
	$(BIN)/python -m train.torch_cv export leukemia --data $(DATA)/cnmc --cell-crop fixed --out runs/gpu/leukemia_96.npz
	cp "$$($(BIN)/python -c 'from train.pretrained import lite0_weights_path; print(lite0_weights_path())')" runs/gpu/lite0.pth

backbone-runs:
	$(GPU_PYTHON) -m train.torch_cv run runs/gpu/brain_128.npz --task brain --backbone small --augment light --out runs/gpu/brain_small
	$(GPU_PYTHON) -m train.torch_cv run runs/gpu/brain_128.npz --task brain --backbone lite0 --augment light --weights runs/gpu/lite0.pth --save-epoch $(BRAIN_EPOCH) --out runs/gpu/brain_lite0
	$(GPU_PYTHON) -m train.torch_cv run runs/gpu/brain_128.npz --task brain --backbone lite0 --augment light --weights runs/gpu/lite0.pth --save-epoch $(BRAIN_EPOCH) --all-data --out runs/gpu/brain_lite0
	$(GPU_PYTHON) -m train.torch_cv run runs/gpu/leukemia_96.npz --task leukemia --backbone small --augment stain_blur --out runs/gpu/leukemia_small
	$(GPU_PYTHON) -m train.torch_cv run runs/gpu/leukemia_96.npz --task leukemia --backbone lite0 --augment stain_blur --weights runs/gpu/lite0.pth --out runs/gpu/leukemia_lite0

backbone-tables: setup
	for run in brain_small brain_lite0; do $(BIN)/python -m train.torch_cv report runs/gpu/brain_128.npz runs/gpu/$$run || exit 1; done
	for run in leukemia_small leukemia_lite0; do $(BIN)/python -m train.torch_cv report runs/gpu/leukemia_96.npz runs/gpu/$$run || exit 1; done
	$(BIN)/python -m train.compare_cv runs/gpu/brain_small runs/gpu/brain_lite0 runs/cv/brain_128_light_whole --out models/training/brain/BACKBONES.md
	$(BIN)/python -m train.compare_cv runs/gpu/leukemia_small runs/gpu/leukemia_lite0 --out models/training/leukemia/BACKBONES.md
	$(BIN)/python -m convert.fold_int8 runs/gpu/brain_128.npz runs/gpu/brain_lite0 --epoch $(BRAIN_EPOCH)

# The brain model is ImageNet EfficientNet-Lite0 (the backbone comparison's winner), trained in PyTorch
# on a GPU machine: after `make backbone-arrays backbone-runs` (the runs keep the fold models and an
# all-data model at epoch BRAIN_EPOCH), `make brain-model` here moves the weights into the Keras model,
# converts it and verifies it on the fold models' held-out scans.
# The epoch the first CV run of this recipe chose (GPU training is not bit-for-bit repeatable).
BRAIN_EPOCH := 18
brain-model: setup
	$(BIN)/python -m train.torch_cv report runs/gpu/brain_128.npz runs/gpu/brain_lite0 --epoch $(BRAIN_EPOCH)
	$(BIN)/python -m train.torch_cv assemble runs/gpu/brain_128.npz runs/gpu/brain_lite0 --out runs/cv/brain_lite0
	$(BIN)/python -m convert runs/cv/brain_lite0 --out models --name brain
	mkdir -p models/training/brain
	cp runs/cv/brain_lite0/cv.md runs/cv/brain_lite0/cv.json runs/cv/brain_lite0/config.json models/training/brain/

# tf2onnx + ONNX Runtime for benchmarks/studies/peers.py, kept out of the shared .venv.
$(ONNX_VENV)/.installed:
	$(PYTHON) -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/pip install -q 'tensorflow==2.21.0' 'tf2onnx==1.17.0' 'onnxruntime==1.32.0' 'Pillow>=10'
	touch $@

# int8 against float32 on the held-out test splits (tables in benchmarks/RESULTS.md; about 3 minutes).
benchmark: setup
	mkdir -p $(BENCH)
	$(BIN)/benchmark --model leukemia_int8.tflite --data $(DATA)/cnmc --limit 600 --threads 1 2 --runs 500 --json $(BENCH)/leukemia.json --markdown $(BENCH)/leukemia.md --plot $(BENCH)/leukemia.png
	$(BIN)/benchmark --model brain_int8.tflite --data $(DATA)/brain_mri --limit 600 --threads 1 2 --runs 500 --json $(BENCH)/brain.json --markdown $(BENCH)/brain.md --plot $(BENCH)/brain.png

# ai-edge-litert against tflite-runtime and ONNX Runtime, and the MAC counts (about 8 minutes).
peers: setup $(TFLITE_VENV)/.installed $(ONNX_VENV)/.installed
	mkdir -p $(BENCH)
	$(BIN)/python -m benchmarks.studies.peers --model leukemia_int8 --data $(DATA)/cnmc --limit 600 --threads 1 2 --runs 300 --builtin-kernels --json $(BENCH)/peers_leukemia.json --markdown $(BENCH)/peers_leukemia.md
	$(BIN)/python -m benchmarks.studies.peers --model brain_int8 --data $(DATA)/brain_mri --limit 600 --threads 1 2 --runs 300 --builtin-kernels --json $(BENCH)/peers_brain.json --markdown $(BENCH)/peers_brain.md
	$(BIN)/python -m benchmarks.macs models/leukemia_int8.tflite models/leukemia_float32.tflite models/brain_int8.tflite

# edge-live frame rate and latency: cell mode on a 640x480 video of test cells, field mode on the smear fields.
live-benchmark: setup
	$(BIN)/python -m benchmarks.studies.live_fps --data $(DATA) --threads 2

# The out-of-domain check against other-task, smear-field and corrupted images; field mode's scale
# (benchmarks/DOMAIN.md, benchmarks/FIELD_SCALE.md; a few minutes).
domain-benchmark: setup
	$(BIN)/python -m benchmarks.studies.domain --data $(DATA) --out benchmarks/DOMAIN.md
	$(BIN)/python -m benchmarks.studies.field_scale --data $(DATA) --out benchmarks/FIELD_SCALE.md

# Offline bundle for Raspberry Pi OS Bookworm 64-bit -> build/bundles/ (needs PyPI).
bundle: setup
	$(BIN)/python deploy/build_bundle.py

# The same for this machine's platform and Python.
bundle-host: setup
	$(BIN)/python deploy/build_bundle.py --platform host

# Install the bundle in a Debian bookworm arm64 userland (debootstrap + qemu-user-static + proot, no binfmt)
# and compare predictions with x86-64: about 17 minutes fresh, 9 reusing build/arm64. Needs root, PyPI,
# deb.debian.org; apt-get install debootstrap qemu-user-static proot python3-seccomp.
verify-arm64: setup
	deploy/verify_arm64.sh
