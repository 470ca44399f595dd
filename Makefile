# bgws: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11+, pip, make).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bgws-installed

.PHONY: demo docs test lint typecheck unit fuzz node-deps bench wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo needs bgws and its three dependencies only: no dev toolchain, no pip upgrade, so a
# fresh clone runs it in seconds. `make test` adds the toolchain to the same venv later.
DEMO_STAMP := $(VENV)/.bgws-demo
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/bgws demo

LINTED := $(wildcard src tests bench examples docs/*.py)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# Node's ws (v8) for the foreign-peer tests, without a lock file (lock files name registries).
# Without node those tests are skipped, and say why.
NODE_DIR := tests/foreign/servers
node-deps:
	@if ! command -v node >/dev/null 2>&1; then \
		echo "node not found: the Node ws foreign-server tests will be skipped"; \
	elif [ ! -f $(NODE_DIR)/node_modules/ws/package.json ]; then \
		cd $(NODE_DIR) && npm install --no-package-lock --no-audit --no-fund --silent; \
	fi

# coverage starts before pytest, so modules imported by the bgws pytest plugin count too.
unit: $(STAMP) node-deps
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report

# The docs site, into site/: --strict fails on a broken link or a reference that does not resolve.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck docs unit

# The fuzz tests with a large budget (CI runs them with a small one); prints the figures.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP) node-deps
	BGWS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/fuzz -q -p no:cacheprovider --timeout=3600

bench: $(STAMP)
	$(BIN)/python -m bench

wheel: $(STAMP)
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) site dist build .pytest_cache .mypy_cache .ruff_cache .coverage $(NODE_DIR)/node_modules
