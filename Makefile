# Set-up and entry points. `make demo` and `make test` each create the virtual environment
# (.venv) on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KS := $(VENV)/bin/karyosearch
DATA ?= ../shared/data
# The bundled Q-band encoder: Proxy-ResNeXt-CBAM, 128 px, the shipped 96-px G-band encoder fine-tuned
# on the BioImLab `paper` split, seed 1, 20 epochs with simulated low-resolution, blurred and
# other-gamma scans (float16; its training record is inside the file; card: models/README.md).
MODEL ?= models/bioimlab-proxy-resnext-cbam-128px.pt
DEMO_INDEX ?= indexes/demo
BIOIMLAB := $(DATA)/bioimlab/single_chromosomes

.PHONY: demo serve test lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# Index every BioImLab image, then query two images of the model's test split (its first 21, and a Y).
demo: $(VENV)/.installed
	$(KS) index $(DATA)/bioimlab --index $(DEMO_INDEX)   # no --model: the shipped encoder for the stain
	$(KS) query "$(BIOIMLAB)/10/10 21b.bmp" "$(BIOIMLAB)/31/31 24.bmp" --index $(DEMO_INDEX) -k 5

# Serve the demo index (built by `make demo`) on http://127.0.0.1:8000/ : the page at /, the
# API documentation at /docs. Writes stay off unless KARYOSEARCH_WRITE_TOKEN is set.
serve: $(VENV)/.installed
	@test -f $(DEMO_INDEX)/card.json || $(MAKE) demo
	$(KS) serve --index $(DEMO_INDEX) --model $(MODEL) --host 127.0.0.1 --port 8000

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check karyosearch tests benchmarks
	$(VENV)/bin/ruff format --check karyosearch tests benchmarks
