# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all test-other-cpu lint bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip
	$(PIP) install --quiet -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(VENV)/bin/reportgen demo --out reportgen-demo

# pytest-xdist: a worker per core, a whole test file per worker (its module fixtures built once), each
# worker its share of the cores' threads (tests/conftest.py). XDIST= (empty) runs in one process.
XDIST  ?= -n auto --dist loadfile

# the fast suite (<= 5 minutes on 2 cores); CI runs the slow tests too (make test-slow)
test: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q -m "not slow" $(XDIST)

# subprocess builds of copied packages, benchmark-sized checks, real Ray clusters and nodes, the demo
test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q -m slow $(XDIST)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q $(XDIST)

# both suites as an older CPU computes them: OpenBLAS, torch, oneDNN and MKL held to their AVX2 kernels, whose
# sums round differently from AVX-512's (a test that asserts a value floating point can move fails here)
OTHER_CPU ?= OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-other-cpu: $(STAMP)
	$(OTHER_CPU) $(MAKE) test-all

lint: $(STAMP)
	$(VENV)/bin/ruff check reportgen tests benchmarks
	$(VENV)/bin/ruff format --check reportgen tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --smoke --out benchmarks/results/smoke.json

clean:
	rm -rf reportgen-demo build dist *.egg-info .pytest_cache
