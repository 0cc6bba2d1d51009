# The two set-up commands of the README:  `make demo`  and  `make test`.
# Both create .venv with the pinned requirements on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/x2br demo -o out/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q Testing

.PHONY: install demo test
