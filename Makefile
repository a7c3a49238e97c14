# LoRA Studio — `make run` starts the studio, `make test` runs every test.
# Both set up what they need on first use and are quick once it is there.
PY_SYSTEM ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
HOST      ?= $(if $(STUDIO_HOST),$(STUDIO_HOST),127.0.0.1)
PORT      ?= $(if $(STUDIO_PORT),$(STUDIO_PORT),8501)
# The studio is online (models download from the Hugging Face Hub); STUDIO_OFFLINE=1 turns that
# off. Tests and benchmarks never reach a hub: they always run offline.
OFFLINE   := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test lint format install browser postgres clean-home bench gpu-check

$(PY):
	$(PY_SYSTEM) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import torch, diffusers, peft, mlflow, streamlit, pydantic"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Debian's Chromium drives the end-to-end tests (Playwright cannot download its own browser here).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

# Debian's PostgreSQL backs the team-tracking test (an MLflow server on PostgreSQL); the test
# starts its own throwaway server, so the cluster the package creates is not used.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	fi

run: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py --server.address $(HOST) --server.port $(PORT) \
	  --server.headless true --browser.gatherUsageStats false

# The tests run on TEST_WORKERS processes (pytest-xdist), a whole file at a time (a module's shared
# fixtures are built once), the files with the longest tests first (tests/conftest.py orders
# them). End-to-end waits stretch with the speed each worker measures under the run's load.
# TEST_WORKERS=0 runs them in one process.
test: TEST_WORKERS ?= 4
test: $(STAMP) browser postgres
	$(OFFLINE) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(OFFLINE) $(PY) $$b || exit 1; done

# The GPU check (benchmarks/gpu_check.py): on a CUDA machine, within 8 minutes and without any
# download, every GPU path of the trainer trains a few dozen steps (bf16, fp16 + scaler, AdamW8bit,
# int8/nf4 bases, SDPA/flash attention, torch.compile, 2 processes over nccl); exits 1 on any
# failure. Without CUDA it says so and exits 0 (`--dry-run` runs the cases on the CPU).
gpu-check: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/gpu_check.py
