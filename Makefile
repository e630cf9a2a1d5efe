# `make demo` and `make test` do all the set-up on a fresh clone: they create .venv when missing and install
# p2pz into it (torch first, from its own pinned CPU wheel, so no CUDA build is pulled in).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.p2pz-installed
DIST_TMP ?= /tmp/p2pz-dist-check
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install demo test test-quick dist dist-check bench bench-full clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[shapes,dev,postgres,web,ray]'
	# lpips (the LPIPS metric's linear layers) asks for torchvision, whose PyPI build does not import beside this
	# torch; p2pz uses only its weights file, so it is installed without its requirements.
	$(PIP) install -q --no-deps -c constraints.txt lpips
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/p2pz demo --out demo-out

# Two pytest workers, one file each at a time (module fixtures stay in one process), one torch thread each: on a
# 2-core machine two single-threaded workers finish sooner than one two-threaded run, whose OpenMP threads spin
# against each other whenever anything else runs. Files go out in collection order, the longest first
# (tests/conftest.py LONGEST_FIRST), not reordered by their number of tests.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The quick tier: everything not marked slow (model work, server processes, package builds); ≤ 5 min here.
test-quick: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

# The sdist and the wheel (built from the sdist) into dist/.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

# The wheel installed the ordinary way — non-editable, with its requirements from the package index, into a new
# virtual environment outside the checkout — then a real flow and the demo with it (.ci/install-flow). `.ci/run`
# runs this.
dist-check: dist
	rm -rf $(DIST_TMP) && mkdir -p $(DIST_TMP)
	$(PYTHON) -m venv $(DIST_TMP)/env
	$(DIST_TMP)/env/bin/python -m pip --disable-pip-version-check install -q torch==2.13.0
	$(DIST_TMP)/env/bin/python -m pip --disable-pip-version-check install -q -c constraints.txt "$$(ls dist/p2pz-*.whl)[shapes]"
	bash .ci/install-flow $(DIST_TMP)/env/bin $(DIST_TMP)/work --demo
	rm -rf $(DIST_TMP)

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-full: $(STAMP)
	$(BIN)/python bench/run_all.py --full

clean:
	rm -rf $(VENV) demo-out .pytest_cache dist build
