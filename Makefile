# crosspath: the two commands of the README.
#   make demo   set up .venv from nothing, then run LeaP next to independent sampling on the embedded default
#   make test   set up .venv from nothing, then run the fast tier and the slow (real-model) tier
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.crosspath-setup-$(shell cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-fast test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PY=$(PY) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/crosspath demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
