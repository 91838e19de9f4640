# One command each, on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Both build the virtual environment first (idempotent: a stamp file records what was installed).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: venv test pytest-args test-fast lint docs demo bench mutate clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[all]" --group dev
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

## test: lint and type-check, build the docs, then every test suite (core, server, client, framework
## integrations, the docs' code blocks: tests/test_docs.py) in PYTEST_WORKERS worker processes (pytest-xdist,
## docs/testing.md); PYTEST_WORKERS=0 (or 1) runs them serially in pytest's own process, as a plain `pytest` does.
## --dist worksteal: each worker starts with a contiguous half of the suite (a module's tests stay together, so
## its module-scoped servers and zygotes start once) and takes work from the other's end when it runs out.
PYTEST_WORKERS ?= 2
PYTEST_ARGS = -q $(if $(filter 0 1,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist worksteal)

test: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src/runalert
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest $(PYTEST_ARGS)

## pytest-args: the arguments `make test` gives pytest (scripts/contention_run.sh runs the suite with them)
pytest-args:
	@echo $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src/runalert

## demo: the quickstart (each level, a mention, a rate-limited repeat, a signed webhook), then a Lightning
## run whose loss turns NaN at step 20: one ERROR alert, training stopped, the fit summary
demo: venv
	$(PY) examples/quickstart.py
	@echo
	@echo "== a Lightning run that diverges (examples/lightning_train.py --nan-at-step 20 --stop-on-nan) =="
	$(PY) examples/lightning_train.py --nan-at-step 20 --stop-on-nan

## docs: the documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or anchor
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: venv
	$(PY) -m benchmarks

## mutate: mutation testing (mutmut, docs/mutation.md) of the modules where a wrong line means a wrong or lost
## alert, against the fast tests, 2 children; slow, so not part of `make test`. MODULE=runalert.backoff runs one
## module. Each run starts afresh; the per-module scores and the survivors go to mutants/scores.txt. PYTHONPATH
## points at the mutated copy so that the processes the tests start (servers, signal children) run the mutants too;
## that folder must exist before mutmut starts (Python skips, for good, a path entry missing at start-up: every
## import would then find the editable install and mutmut would find no test for any mutant).
mutate: venv
	rm -rf mutants
	mkdir -p mutants/src
	-PYTHONPATH=$(CURDIR)/mutants/src $(VENV)/bin/mutmut run --max-children 2 $(if $(MODULE),"$(MODULE).*")
	$(PY) scripts/mutation_score.py | tee mutants/scores.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist site mutants
