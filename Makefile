# growbench: every target sets up what it needs (a virtual environment in .venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# the CIFAR-10 JPEG copy beside the checkout if present, else ./data (torchvision's CIFAR format)
DATA_DIR ?= $(if $(wildcard ../shared/data/cifar10-jpegq75/SHA256SUMS),../shared/data/cifar10-jpegq75,data)
OUT_DIR  ?= results
SUITE    ?= default
PRESET   ?= quick

.PHONY: setup reproduce report test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# the default experiment (quick preset: the large ResNet-20 on 10,000 CIFAR-10 images, 15 epochs)
reproduce: setup
	$(PY) -m bench sweep $(SUITE) --preset $(PRESET) --data-dir $(DATA_DIR) --out-dir $(OUT_DIR)
	$(PY) -m bench status --out-dir $(OUT_DIR)

report: setup
	$(PY) -m bench status --out-dir $(OUT_DIR)

test: setup
	GROWBENCH_DATA=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests --ignore=tests/benchmarks

bench: setup
	GROWBENCH_DATA=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests/benchmarks --benchmark-enable \
		--benchmark-json=$(OUT_DIR)/benchmarks.json -s

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
