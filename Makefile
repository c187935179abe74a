# growbench: every target sets up what it needs (a virtual environment in .venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the CIFAR-10 JPEG copy beside the checkout if present, else ./data (torchvision's CIFAR format)
DATA_DIR ?= $(if $(wildcard ../shared/data/cifar10-jpegq75/SHA256SUMS),../shared/data/cifar10-jpegq75,data)
OUT_DIR  ?= results
SUITE    ?= default
PRESET   ?= quick

.PHONY: setup reproduce campaign report report-reference test bench gate clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# the default experiment (quick preset: the large ResNet-20 and the paper's method on 10,000 CIFAR-10 images,
# 15 epochs), then the verdict block: both beside the shipped reference runs and the paper
reproduce: setup
	$(PY) -m bench sweep $(SUITE) --preset $(PRESET) --data-dir $(DATA_DIR) --out-dir $(OUT_DIR)
	$(PY) -m bench status --out-dir $(OUT_DIR)
	$(PY) -m reports.verdict --results $(OUT_DIR)

# a long campaign (README: long campaigns): the suite's runs one per core, resumable from the committed
# work folder on any machine; HOURS stops it (0: to the end), COMMIT_EVERY commits its folders (minutes)
CAMPAIGN ?= paper_resnet20
HOURS ?= 0
COMMIT_EVERY ?= 0
campaign: setup
	$(PY) -m bench campaign $(CAMPAIGN) --data-dir $(DATA_DIR) --hours $(HOURS) --commit-every $(COMMIT_EVERY)

# tables and figures from the run directories in OUT_DIR, beside the paper's numbers
report: setup
	$(PY) -m reports --results $(OUT_DIR) --out reports/out

# the published report (docs/report/) from the committed reference runs; CI checks that it matches them
report-reference: setup
	$(PY) -m reports --reference --out docs/report

test: setup
	GROWBENCH_DATA=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests --ignore=tests/benchmarks --ignore=tests/regression

# CI regression gate on the speed-up numbers (cost fractions exact; step-time ratios vs the baseline file; a short
# whole run against its step-time prediction, on DATA_DIR)
gate: setup
	mkdir -p $(OUT_DIR)
	GROWBENCH_OUT=$(OUT_DIR) GROWBENCH_DATA=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests/regression --benchmark-enable --benchmark-json=$(OUT_DIR)/gate-benchmark.json -s

bench: setup
	mkdir -p $(OUT_DIR)
	GROWBENCH_DATA=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests/benchmarks --benchmark-enable \
		--benchmark-json=$(OUT_DIR)/benchmarks.json -s
	$(PY) -m bench speed --preset quick --arch resnet20,vgg11 --json $(OUT_DIR)/speed.json
	$(PY) -m bench speed --preset quick --arch resnet20,vgg11 --growth.batch-adapt true --json $(OUT_DIR)/speed-batch-adapt.json

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
