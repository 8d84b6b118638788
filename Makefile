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

# Two pytest processes of one torch thread each: 6m19s for the suite at 1c02b68 (README), against 9m40s for one
# process of 2 threads and 10m09s for two processes of 2 threads each (oversubscribed), 2026-11-27.
test: data
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2

clean:
	rm -rf $(VENV) runs
