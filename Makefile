# Two commands from nothing: `make demo` and `make test`. Both create .venv and install the package
# with every extra; torch is pinned through constraints.txt (2.13.0, a CPU build here). `make test`
# runs ruff first and installs Debian's chromium for the browser tests (Playwright drives it; no browser download).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean chromium

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[torch,keras,data,onnx,openvino,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/onebyone tour --html tour_html
	@echo "open tour_html/index.html in a browser for the same lessons with figures"

# apt-get as root, or through passwordless sudo; where neither works the browser tests skip and say why.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing Debian's chromium for the browser tests"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null ) \
	    || echo "chromium could not be installed: the browser tests will skip"; \
	fi

# pytest in two processes (pytest-xdist), one thread each: most tests are small work that two torch threads
# only make wait for each other; on two cores this takes the suite from about 9 to 5 minutes.
test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 KERAS_BACKEND=torch $(PY) -m pytest -q -n 2

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
