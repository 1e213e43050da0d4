# One-command set-up: `make setup` (every other target runs it first when needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build. On a GPU machine,
# override: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0

# Training / report options, e.g. make train-resnet ARGS="--data ../shared/data/medmnist/adrenalmnist3d.npz --shape 28 28 28"
ARGS ?=

.PHONY: setup test test-fast lint train-resnet train-vit report cv tune explain export bench bench-quick bench-gpu prepare clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check common torch_resnet tf_transformer tests

# Tests in parallel processes (pytest-xdist): most of a test's time is a child process starting TensorFlow or
# torch, or a tiny training, so two workers overlap them even on two cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal)

test: setup lint
	$(PY) -m pytest -q $(XDIST)

test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not slow"

prepare: setup
	$(PY) -m common prepare $(ARGS)

train-resnet: setup
	$(PY) -m torch_resnet train $(ARGS)

train-vit: setup
	$(PY) -m tf_transformer train $(ARGS)

report: setup
	$(PY) -m common report $(ARGS)

cv: setup
	$(PY) -m common cv $(ARGS)

# Equal-budget Optuna studies of both models, then cv of each best, e.g. make tune ARGS="--name demo --trials 4 ..."
tune: setup
	$(PY) -m common tune $(ARGS)

# Saliency maps of a trained run (either model), e.g. make explain ARGS="--run-dir runs/resnet-... --split test"
explain: setup
	$(PY) -m common explain $(ARGS)

# A run or cv/<name>/<model> as an ONNX bundle, e.g. make export ARGS="runs/resnet-... --out bundles/resnet"
export: setup
	$(PY) -m common export $(ARGS)

# Benchmarks: each package measures itself into one JSON folder; common renders the folder.
BENCH_DIR ?= .cache/bench
# Real T1 MRI for the data, loader and t1-linear benchmarks: a manifest CSV[:label column], e.g.
# make bench BENCH_DATA=../shared/data/ixi_t1_hh/labels.csv:age_group (unset: the synthetic demo).
BENCH_DATA ?= $(VOLCLS_BENCH_DATA)
bench bench-quick: export VOLCLS_BENCH_DATA = $(BENCH_DATA)
define run_benchmarks
	rm -rf $(BENCH_DIR) && mkdir -p $(BENCH_DIR)
	$(PY) -m common.bench.suite data $(1) --json-dir $(BENCH_DIR)
	$(PY) -m torch_resnet.bench suite $(1) --json-dir $(BENCH_DIR)
	$(PY) -m tf_transformer.bench --suite $(1) --json-dir $(BENCH_DIR)
	$(PY) -m common.bench.suite render $(BENCH_DIR) --out $(2) --command "$(3)"
endef

# ... then the README's marked performance numbers are copied from the new BENCHMARKS.md (common/bench/claims.py).
bench: setup
	$(call run_benchmarks,,BENCHMARKS.md,make bench)
	$(PY) -m common.bench.claims

bench-quick: setup
	$(call run_benchmarks,--quick,.cache/BENCHMARKS.quick.md,make bench-quick)

# The prepared GPU benchmark (one call, about 7 minutes, always finishes): README "GPU benchmark".
# It needs only numpy, torch and keras, so on a borrowed GPU machine run it with that machine's own
# python: make bench-gpu PY=python3 (no set-up); ARGS="--device cpu --shape 32" checks it on a CPU.
bench-gpu:
	$(PY) -m common.bench.gpu --json-dir .cache/bench-gpu --out BENCHMARKS-gpu.md $(ARGS)

clean:
	rm -rf .cache .pytest_cache .ruff_cache
