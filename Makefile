# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-learned lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on these machines 2.13.0 is the local CPU wheel; the package only declares a range
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/datawall study --preset quick --store runs/store --out runs/study-quick

# two workers, one test file each at a time (a file's trained-model fixtures are built once), one torch thread
# each: on 2 cores this halves the wall time of one process with two threads
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile

test: $(STAMP)
	$(PYTEST)

# the tests of what a model learned, under another set of CPU kernels (`.ci/run` does this after `make test`)
test-learned: $(STAMP)
	$(PYTEST) -m learned

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs
