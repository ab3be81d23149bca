# llm-course: `make test` checks everything, `make lab` opens the notebooks, `make train` pretrains a model.
# Each target first creates .venv (if missing) and installs the pinned requirements and the package;
# that step is skipped when nothing it depends on has changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SANITIZE := notebooks/nbval_sanitize.cfg
# Strict output checks on CPU; on a CUDA machine, float noise differs, so only cells marked
# NBVAL_CHECK_OUTPUT are compared (override with `make test NBVAL=--nbval`).
NBVAL ?= $(shell $(BIN)/python -c "import torch; print('--nbval-lax' if torch.cuda.is_available() else '--nbval')" 2>/dev/null || echo --nbval)

.PHONY: setup test lab train notebooks check-notebooks benchmarks clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 'llm-course needs Python 3.10 or newer; this is ' + sys.version.split()[0])"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The fine-tuning chapters use the preset base model when you trained one; the stored outputs, and so the
# checks, use the quick base (llm_course.fine_tuning_base).
test: setup
	LLM_COURSE_QUICK_BASE=1 $(BIN)/python -m pytest $(NBVAL) --nbval-current-env --nbval-sanitize-with $(SANITIZE) tests notebooks

# Jupyter refuses to start as root (as on many containers and lab images) unless told it may.
lab: setup
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

train: setup
	$(BIN)/llm-course train

# Re-execute every notebook top to bottom in a fresh kernel and store the outputs (run before committing).
notebooks: setup
	$(BIN)/python scripts/run_notebooks.py notebooks/*.ipynb

benchmarks: setup
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/bf16.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/grad_checkpointing.py
	$(BIN)/python benchmarks/token_store.py
	$(BIN)/python benchmarks/tokenizer.py
	$(BIN)/python benchmarks/llama_train_step.py
	$(BIN)/python benchmarks/tokenizer_bpb.py

clean:
	rm -rf $(VENV) .pytest_cache
