# The two commands of the README: `make book` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= auto
export PYTHONHASHSEED := 0

.PHONY: book test lint pytest nbval verify results constraints clean

# The venv is (re)installed only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,test]"
	@touch $(STAMP)

book: $(STAMP)
	$(PY) tools/book.py --profile $(PROFILE)

test: lint pytest nbval verify

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test: that is not a failure of the code.
pytest: $(STAMP)
	SITH_PROFILE=quick $(PY) -m pytest -q tests || [ $$? -eq 5 ]

nbval: $(STAMP)
	SITH_PROFILE=quick SITH_PROGRESS=0 $(PY) -m pytest -q --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg chapters || [ $$? -eq 5 ]

verify: $(STAMP)
	$(PY) -m sithlib verify

# Paper-profile results for every missing or stale experiment (on a GPU).
results: $(STAMP)
	$(PY) -m sithlib run --all --profile paper

constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sort -f > constraints.txt

clean:
	rm -rf _build .cache
