# One task runner. `make run` and `make test` do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast ingest eval serve api practice clean-index clean install browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, or pip resolves a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/guides serve

# Debian's Chromium for the real-browser test (no browser download: it comes from the distribution).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "Installing Debian's chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
		|| { echo "error: could not install chromium (needs root and Debian's package lists); the browser test will fail"; exit 1; }; }

test: $(STAMP) browser
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

ingest: $(STAMP)
	$(BIN)/guides ingest

eval: $(STAMP)
	$(BIN)/guides eval

# The OpenAI-compatible API on http://127.0.0.1:8000/v1 (GUIDES_API_HOST, GUIDES_API_PORT, GUIDES_API_KEY).
api: $(STAMP)
	$(BIN)/guides api

practice: $(STAMP)
	$(BIN)/guides practice

clean-index:
	rm -rf data/index

clean: clean-index
	rm -rf $(VENV)
