# Costline: `make run` starts it locally, `make test` runs every check CI runs.
# Both work on a machine with nothing but Python 3.11+: the first call creates .venv and installs the
# project; later calls reinstall only when pyproject.toml changed. With no DATABASE_URL, an embedded
# PostgreSQL (pgserver) keeps its data in .costline/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

SPEEDUPS := .costline/speedups.stamp

.PHONY: run test venv compile

run: $(INSTALLED) $(SPEEDUPS)
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py collectstatic --no-input --verbosity 0
	$(BIN)/python manage.py run

test: $(INSTALLED) $(SPEEDUPS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
# mypy only imports the settings, and exits without running atexit hooks: an embedded PostgreSQL or
# Redis started for it would outlive it, so it gets URLs it never connects to instead.
	DATABASE_URL=$${DATABASE_URL:-postgres://localhost/unused-by-mypy} \
		REDIS_URL=$${REDIS_URL:-redis://localhost/unused-by-mypy} $(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

venv: $(INSTALLED)

# mypyc builds of the ingest path's hot modules (collector/speedups.py), rebuilt when they change.
# They need a C compiler; without one Costline runs the same modules interpreted, only slower.
compile: $(SPEEDUPS)

$(SPEEDUPS): $(INSTALLED) collector/*.py platform/costline/usage/*.py
	@mkdir -p .costline
	COSTLINE_SPEEDUPS=0 $(BIN)/python -c "from collector.speedups import main; main()" build \
		|| echo "warning: could not compile the speedups (is a C compiler installed?); running interpreted"
	@touch $@

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.version_info >= (3, 11) or sys.exit("Costline needs Python 3.11+: make PYTHON=python3.12 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@
