# Every target installs what it needs into .venv first (a fresh machine needs only python3).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Exit code 1 means "found unconnected variables", which is what the samples are for.
demo: install
	$(BIN)/gradcheck sample_models/*.keras sample_models/factories.py:actor_critic \
	  sample_models/factories.py:gan_missing_layer sample_models/loops.py:train_step \
	  sample_models/loops.py:module_step \
	  --custom-objects sample_models/custom_layers.py; test $$? -le 1

# The suite is CPU-bound (TensorFlow in every test): one pytest worker per core, a test file's
# tests on one worker (they share its session fixtures). JOBS=0 runs it in this process.
JOBS ?= auto

test: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -q -m slow -n $(JOBS) --dist loadfile

lint: install
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check gradcheck tests benchmarks sample_models

bench: install
	$(BIN)/python benchmarks/bench.py

samples: install
	$(BIN)/python sample_models/build_samples.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
