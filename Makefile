# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo
DEMO_ARGS ?=

.PHONY: demo editor test install browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) jobs/demo.py --out $(OUT) $(DEMO_ARGS)

# The conditional editor (configs/cvae_edit_synth64.yaml) on 16,000 rendered faces, with its guide and the
# judge, then the quality benchmark of the three and the editor's latent analysis, which stores the condition
# rules its slot edits follow: about 1.2 h on 2 cores (bench/quality.sh; resumable). The benchmark is copied
# beside the bundle, where the web page reads each slider's measured flip rate and fidelity. Then serve it with
#   facegen serve --bundle out/editor/runs/cvae_edit_synth64/bundle --classifier out/editor/runs/guide16k_synth64/bundle
editor: $(VENV)/.installed
	bench/quality.sh --out out/editor --configs "guide16k_synth64 cvae_edit_synth64"
	$(PY) -m facegen.cli analyze --bundle out/editor/runs/cvae_edit_synth64/bundle \
	    --classifier out/editor/runs/judge_synth64/bundle
	mkdir -p out/editor/runs/cvae_edit_synth64/quality
	cp out/editor/evaluation/quality.json out/editor/runs/cvae_edit_synth64/quality/quality.json

# The web-page tests drive Debian's headless Chromium; install it when missing (as root), else say what to do.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the web-page tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "error: the web-page tests need chromium and chromedriver: sudo apt-get install chromium chromium-driver" >&2; exit 2; fi

test: $(VENV)/.installed browser
	$(PY) -m pytest -q tests

clean:
	rm -rf out runs .pytest_cache
