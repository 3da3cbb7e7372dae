# Two commands from nothing: `make demo` and `make test`. Both create .venv and install the package
# with every extra; torch is pinned through constraints.txt (2.13.0, a CPU build here).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[torch,keras,data,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/onebyone tour

test: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
