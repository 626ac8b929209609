# The README's commands. `make setup` builds .venv once; a second run is a no-op.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gen3d-setup
# The CPU build of torch on a machine without an NVIDIA GPU; never an unpinned torch.
TORCH_VERSION  ?= 2.13.0
TORCH_PIP_ARGS ?=
JOBS   ?= 2

.PHONY: setup browser sandbox lab test assign benchmark doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -e ".[lab,test]"
	touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab lectures/00_representations.ipynb

doctor: setup
	$(VENV)/bin/gen3d-course doctor

assign: setup
	$(VENV)/bin/gen3d-course assign

# Unit tests and every lecture and solution notebook (nbval, fast mode) in one pytest run,
# then the browser tests (a real JupyterLab in headless Chromium) on their own.
# Assignments run in tests/test_assignments.py, which expects each of their checks to fail.
# One torch thread per worker: two multi-threaded workers on two cores slow each other badly.
NOTEBOOKS = $(wildcard lectures/*.ipynb solutions/*.ipynb)
test: setup browser sandbox
	GEN3D_MODE=fast OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
	  -n $(JOBS) --dist loadscope -m "not browser" tests $(NOTEBOOKS)
	GEN3D_MODE=fast OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -m browser tests/browser

# Debian's Chromium for the browser tests; where it cannot be installed they are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "Chromium could not be installed: the browser tests will be skipped."

# Debian's bubblewrap: `gen3d-course grade` runs each submission in its own sandbox. Where it
# cannot be installed, the grading tests that need it are skipped and `grade` refuses (--unsafe).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } || \
	  echo "bubblewrap could not be installed: the sandboxed grading tests will be skipped."

benchmark: setup
	GEN3D_MODE=fast $(PY) benchmarks/notebooks.py
	$(PY) benchmarks/sliders.py

clean:
	rm -rf $(VENV) .pytest_cache
