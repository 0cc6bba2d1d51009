# The two set-up commands of the README:  `make demo`  and  `make test`.
# Both create .venv with the pinned requirements on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# pydicom 2.x beside the venv (not in it): 3D Slicer ships pydicom 2.4, and the DICOM reader
	# is tested against it too (Testing/test_slicer_deps.py, X2BR_PYDICOM2)
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/pydicom2 pydicom==2.4.4
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/x2br demo -o out/demo

test: $(VENV)/.installed
	X2BR_PYDICOM2=$(abspath $(VENV))/pydicom2 $(BIN)/python -m pytest -q Testing

.PHONY: install demo test
