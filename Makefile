# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo
DEMO_ARGS ?=

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) jobs/demo.py --out $(OUT) $(DEMO_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

clean:
	rm -rf out runs .pytest_cache
