# The two set-up commands (see README):
#   make demo   set up everything and run the demo on an embedded database
#   make test   set up everything (plus Chromium) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
WITH_ENV := set -a && . $(VENV)/ncl.env && set +a &&

.PHONY: demo test setup setup-test app bench bench-quick bench-full-fmnist clean

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	@$(WITH_ENV) $(PY) -m fiftyone_ncl.cli demo

test: setup-test
	@$(WITH_ENV) $(PY) -m pytest -q -ra tests

# open the App on the demo dataset (http://localhost:5151)
app: setup
	@$(WITH_ENV) $(VENV)/bin/fiftyone app launch ncl-demo --wait -1

bench-quick: setup
	@$(WITH_ENV) $(PY) -m fiftyone_ncl.cli bench --profile quick

bench: setup
	@$(WITH_ENV) $(PY) -m fiftyone_ncl.cli bench --profile full

# the README's full-size look-alike tables: parts in two lanes, then merged
bench-full-fmnist: setup
	@$(WITH_ENV) bash scripts/bench-full-fmnist.sh

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
