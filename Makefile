# The README's commands. `make setup` builds .venv once; a second run is a no-op.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gen3d-setup
# The CPU build of torch on a machine without an NVIDIA GPU; never an unpinned torch.
TORCH_VERSION  ?= 2.13.0
TORCH_PIP_ARGS ?=
JOBS   ?= 2

.PHONY: setup browser sandbox lab test test-unit book assign benchmark doctor clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -e ".[lab,test,book]"
	touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab lectures/00_representations.ipynb

doctor: setup
	$(VENV)/bin/gen3d-course doctor

assign: setup
	$(VENV)/bin/gen3d-course assign

# Unit tests and every lecture and solution notebook (nbval, fast mode) in one pytest run,
# then the course website in fast mode, then the browser tests (a real JupyterLab and the
# website in headless Chromium) on their own.
# Assignments run in tests/test_assignments.py, which expects each of their checks to fail.
# One torch thread per worker: two multi-threaded workers on two cores slow each other badly.
NOTEBOOKS = $(wildcard lectures/*.ipynb solutions/*.ipynb)
test: setup browser sandbox
	GEN3D_MODE=fast OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
	  -n $(JOBS) --dist loadscope -m "not browser" tests $(NOTEBOOKS)
	GEN3D_MODE=fast $(MAKE) book
	GEN3D_MODE=fast OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -m browser tests/browser

# `make test-unit U=08`: one unit's library tests, its lecture and solution (nbval) and the check
# that its assignment's checks fail untouched. A unit's library tests are listed here.
UNIT_TESTS_00 = tests/test_shapes.py tests/test_extract.py tests/test_meshes.py tests/test_metrics.py tests/test_mesh_quality.py \
                tests/test_render_cameras.py tests/test_render_sphere_tracing.py tests/test_viz.py
UNIT_TESTS_01 = tests/test_autoencoders.py tests/test_toy_and_images.py tests/test_checks.py
UNIT_TESTS_02 = tests/test_gans.py tests/test_toy_and_images.py
UNIT_TESTS_03 = tests/test_gans.py
UNIT_TESTS_04 = tests/test_voxel_gan.py
UNIT_TESTS_05 = tests/test_deepsdf.py tests/test_extract.py tests/test_meshes.py
UNIT_TESTS_06 = tests/test_atlasnet.py
UNIT_TESTS_07 = tests/test_occnet.py tests/test_mise.py
UNIT_TESTS_08 = tests/test_nerf.py tests/test_nerf_data.py $(wildcard tests/test_render_*.py)
UNIT_TESTS_09 = tests/test_graf.py tests/test_render_patches.py tests/test_render_rays.py tests/test_render_compose.py tests/test_camera_control.py tests/test_voxel_graf.py
UNIT_TESTS_10 = tests/test_vqvae.py tests/test_transformer.py
UNIT_TESTS_11 = tests/test_diffusion.py
UNIT_TESTS_12 = tests/test_score_distillation.py
UNIT_SOLUTIONS = $(basename $(notdir $(wildcard solutions/$(U)_*.ipynb)))
test-unit: setup
	@test -n "$(UNIT_TESTS_$(U))" || { echo "usage: make test-unit U=NN with NN one of 00-12"; exit 2; }
	GEN3D_MODE=fast OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=300 -m "not browser" \
	  $(UNIT_TESTS_$(U)) $(wildcard lectures/$(U)_*.ipynb solutions/$(U)_*.ipynb) \
	  $(foreach s,$(UNIT_SOLUTIONS),"tests/test_assignments.py::test_every_check_fails_on_the_untouched_assignment[$(s)]")

# The course website in _build/site: lectures executed in the run mode GEN3D_MODE names
# (lecture by default), JOBS at a time with one torch thread each (docs/execute.py), cached per
# mode in _build/ so a
# rebuild re-runs only the notebooks whose code changed (after a change to the library or to
# docs/kernel_startup.py, delete _build/jupyter_cache to re-run all). Configuration: docs/conf.py.
book: setup
	OMP_NUM_THREADS=1 $(PY) docs/execute.py --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) -m sphinx -b html -q -d _build/doctrees docs _build/site

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
	rm -rf $(VENV) .pytest_cache _build docs/lectures docs/_autosummary
