# Two entry points a newcomer needs: `make demo` and `make test`. Both set up everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo test test-fast lint bench clean

# torch is installed alone first, pinned to the local CPU wheel, so that the later resolve
# finds it satisfied and never downloads a CUDA build. Every module is compiled at install: with
# PYTHONDONTWRITEBYTECODE set (as here) no process would ever write a .pyc, and every process
# would compile torch from source on each start (without: suite 539 -> 939 s). compileall does
# it on every core where pip would on one (set-up 62 -> 50 s); its exit status is not read
# because, as under pip, a few test files of the libraries do not compile (torch's py312 ones).
# pip's own output goes to $(VENV)/install.log (its last lines are shown if it fails).
$(STAMP): pyproject.toml constraints.txt
	@echo "setting up $(VENV) (pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --quiet --upgrade pip \
	  && $(BIN)/pip install --quiet --no-compile torch==2.13.0 \
	  && $(BIN)/pip install --quiet --no-compile -c constraints.txt -e ".[dev]"; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VENV)/install.log; echo "pip failed: see $(VENV)/install.log"; exit 1; }
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > $(VENV)/compile.log 2>&1 || true
	@$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__; assert not torch.version.cuda, 'a CUDA torch was installed'"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@$(COMPILE)
	$(BIN)/fedsynth demo

# System packages the tests need (Debian's chromium for the report's browser test); a no-op
# when already installed.
system:
	scripts/install-system-packages.sh

# Two pytest workers, each test process (and every process it starts) on one OpenMP thread:
# many tests run several processes at once (Ray actors, SuperNodes), and on 2 cores torch's
# spinning worker threads starved them (docs/research/2026-12-04-suite-time.md).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal
# fedsynth's own modules compiled once: where PYTHONDONTWRITEBYTECODE is set (as on these
# machines) every process the tests start would compile them again (0.35 s a process).
COMPILE := $(BIN)/python -m compileall -q fedsynth > /dev/null

test: $(STAMP) system
	$(BIN)/ruff check fedsynth tests benchmarks
	@$(COMPILE)
	$(PYTEST)

# For development: skips the tests marked slow (quality fits) and integration (real Ray, Flower
# deployments, HTTP servers, browsers, subprocess CLIs). `make test` runs everything, as CI does.
test-fast: $(STAMP)
	$(BIN)/ruff check fedsynth tests benchmarks
	@$(COMPILE)
	$(PYTEST) -m "not slow and not integration"

# The quick benchmarks (speed, start-up); each quality protocol's command is in benchmarks/README.md.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.speed --repeats 5 --epochs 30 --out benchmarks/results/speed.json
	$(BIN)/python -m benchmarks.startup --label current --out benchmarks/results/startup.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
