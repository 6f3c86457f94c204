# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast bench bench-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip
	$(PIP) install --quiet -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(VENV)/bin/reportgen demo --out reportgen-demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 MPLBACKEND=Agg $(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --smoke --out benchmarks/results/smoke.json

clean:
	rm -rf reportgen-demo build dist *.egg-info .pytest_cache
