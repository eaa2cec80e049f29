# The two commands of the README: `make book` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= auto
# Test processes at once (pytest-xdist). Each runs one thread: on two cores two one-thread
# processes run the small networks of the quick profiles ~1.4x faster than one two-thread
# process, and more threads than cores stall torch's OpenMP pool. `make test JOBS=1` runs serially.
JOBS ?= 2
export PYTHONHASHSEED := 0

.PHONY: book test lint pytest nbval verify results constraints clean

# The venv is (re)installed only when the dependency files change; tools/install.sh says why it
# installs the frozen versions one heavy wheel at a time.
$(STAMP): pyproject.toml constraints.txt tools/install.sh
	PYTHON=$(PYTHON) bash tools/install.sh $(VENV)
	@touch $(STAMP)

book: $(STAMP)
	$(PY) tools/book.py --profile $(PROFILE)

test: lint pytest nbval verify

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test: that is not a failure of the code.
pytest: $(STAMP)
	OMP_NUM_THREADS=1 SITH_PROFILE=quick $(PY) -m pytest -q -n $(JOBS) tests || [ $$? -eq 5 ]

# --dist loadfile: a notebook's cells run in order in one kernel, so a notebook stays on one worker.
nbval: $(STAMP)
	OMP_NUM_THREADS=1 SITH_PROFILE=quick SITH_PROGRESS=0 $(PY) -m pytest -q -n $(JOBS) \
		--dist loadfile --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg chapters || [ $$? -eq 5 ]

verify: $(STAMP)
	$(PY) -m sithlib verify

# Paper-profile results for every missing or stale experiment (on a GPU).
results: $(STAMP)
	$(PY) -m sithlib run --all --profile paper

# A venv made without an NVIDIA driver has no triton (tools/install.sh): its pin is carried over.
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; { $(PY) -m pip freeze --all --exclude-editable | grep -v '^pip=='; \
		$(PY) -m pip show triton >/dev/null 2>&1 || grep '^triton==' constraints.txt; } | sort -f; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt

clean:
	rm -rf _build .cache
