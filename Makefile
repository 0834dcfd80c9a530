# sceneclip — the two commands are `make demo` and `make test`; each sets itself up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Lambda runs Python 3.12: prefer it for the virtualenv, fall back to python3 (3.11+).
PYTHON ?= $(shell PYENV_VERSION=3.11.7:3.12.1 python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3)
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv tools browser gdal checkov demo test test-py311 bench bench-peers bench-worker bench-memory bench-warp-memory bench-coldstart layer load clean

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.lock
	$(VPY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv with the pinned dependencies

demo: $(STAMP)  ## run the main job end to end on the embedded default
	$(VPY) -m sceneclip.tools.demo

# SAM CLI conflicts with the runtime pins (botocore, pydantic): it gets a virtualenv of its own.
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
$(TOOLS_STAMP): requirements-tools.lock
	@test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements-tools.lock
	@touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)  ## create .venv-tools (aws-sam-cli) used by the template tests

# The report tests render pages in headless Chromium (Debian's chromium). Installed once when missing (CI runs
# as root on a clean machine; elsewhere sudo is used if available); quiet, and a no-op when already present.
browser:  ## install headless Chromium (Debian package chromium) for the report tests, when missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing chromium (apt) for the report tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The target-grid tests compare with gdalwarp (Debian's gdal-bin): installed once when missing, like chromium.
gdal:  ## install gdalwarp (Debian package gdal-bin) for the target-grid comparison tests, when missing
	@command -v gdalwarp >/dev/null 2>&1 || { \
		echo "installing gdal-bin (apt) for the gdalwarp comparison tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gdal-bin >/dev/null; }

# checkov pins boto3/botocore of its own: another virtualenv. Run offline (--skip-download).
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
$(CHECKOV_STAMP): requirements-checkov.lock
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q -r requirements-checkov.lock
	@touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)  ## scan template.yaml with checkov (0 failed checks: each is fixed or skipped with a reason)
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact --quiet

test: $(STAMP) $(TOOLS_STAMP) $(CHECKOV_STAMP) browser gdal  ## layer contracts, checkov, then the suite on Python 3.12 (Lambda's), then again on 3.11 when installed
	$(VENV)/bin/lint-imports
	SCENECLIP_TOOLS_BIN=$(abspath $(TOOLS_VENV))/bin SCENECLIP_CHECKOV_BIN=$(abspath $(CHECKOV_VENV))/bin/checkov \
		$(VPY) -m pytest $(PYTEST_ARGS)
	@py311=$$(python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null); \
	if [ "$(VENV)" = ".venv" ] && [ -z "$(NO_PY311)" ] && [ -n "$$py311" ] \
	   && [ "$$($(VPY) -c 'import sys; print(sys.version_info[:2] != (3, 11))')" = "True" ]; then \
		echo "== the same suite on Python 3.11 ($$py311) =="; \
		$(MAKE) --no-print-directory test VENV=.venv311 PYTHON=$$py311; \
	elif [ "$(VENV)" = ".venv" ]; then echo "(second run on Python 3.11 skipped: NO_PY311 set, no python3.11, or .venv is 3.11)"; fi

test-py311:  ## run the test suite under Python 3.11 only, in .venv311
	$(MAKE) test VENV=.venv311 PYTHON=$$(python3.11 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3)

bench: $(STAMP)  ## run the benchmarks (prints figures, asserts nothing on time): bytes fetched, the peers, worker scaling
	$(VPY) benchmarks/bench_clip.py
	$(MAKE) --no-print-directory bench-peers
	$(MAKE) --no-print-directory bench-worker

bench-worker: $(STAMP)  ## scenes/min of `sceneclip worker` at --concurrency 1 and 2 on 4096² COGs (BENCH_ARGS=--quick: 1024²)
	$(VPY) benchmarks/bench_worker.py $(BENCH_ARGS)

# The peer benchmark's own virtualenv: rioxarray (0.20+ needs Python >= 3.12) and rio-tiler on the runtime
# lock's rasterio/GDAL (requirements-bench.in constrains them to it), plus this worktree.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
$(BENCH_STAMP): requirements-bench.lock pyproject.toml
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q -r requirements-bench.lock
	$(BENCH_VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP)  ## sceneclip vs seed recipe, gdalwarp, rioxarray, rio-tiler, whole processes (BENCH_ARGS=--quick: 2048²)
	@command -v gdalwarp >/dev/null || (apt-get update && apt-get install -y gdal-bin)
	$(BENCH_VENV)/bin/python benchmarks/bench_peers.py $(BENCH_ARGS)

layer: $(STAMP)  ## build layers/geo for Python 3.12 (x86_64 and arm64) and check the size budget
	$(VPY) layers/build_layer.py

bench-memory: $(STAMP)  ## peak RSS of a 16384²×3 uint16 clip vs the rasterio.mask recipe (--quick: 4096²)
	$(VPY) benchmarks/bench_memory.py $(BENCH_ARGS)

bench-warp-memory: $(STAMP)  ## peak RSS and wall of target-grid clips and a mosaic vs the source-grid clip (8192²)
	$(VPY) benchmarks/bench_warp_memory.py $(BENCH_ARGS)

bench-coldstart: $(STAMP)  ## handler import + init time as a ratio to `import rasterio`
	$(VPY) benchmarks/bench_coldstart.py
	@command -v valgrind >/dev/null && $(VPY) benchmarks/count_instructions.py || echo "(instruction counts skipped: valgrind not installed)"

load: $(STAMP)  ## 200 events through moto SQS to `sceneclip worker --concurrency 2`; prints the outcome table
	$(VPY) tests/load/load_run.py $(LOAD_ARGS)

clean:  ## remove virtualenvs and build output
	rm -rf $(VENV) .venv311 .venv-checkov $(BENCH_VENV) build .pytest_cache
