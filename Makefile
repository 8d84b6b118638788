# Two commands for a fresh clone:
#   make run    install everything, fetch MNIST, train the seed's experiment (preset seed-regularized)
#   make test   install everything, fetch MNIST, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install data run test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,tensorboard,serve,export,tune]'
	touch $@

data: install
	$(BIN)/mnist-ops data fetch

run: data
	$(BIN)/mnist-ops train --preset seed-regularized

test: data
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
