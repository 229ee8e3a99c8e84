VENV ?= .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: test test-fast demo docs install bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,vision,ray,app,text]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest tests -q

test-fast: install
	$(PY) -m pytest tests -q -m "not slow and not browser and not gpu and not ray"

# the documentation site, offline and strict (a warning fails it), tutorials executed, into site/
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

demo: install
	$(VENV)/bin/torchexplain demo

bench: install
	$(PY) benchmarks/bench_gradient.py

clean:
	rm -rf $(VENV) build dist site src/*.egg-info
