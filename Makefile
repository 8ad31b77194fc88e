# seglab: every target builds the pinned environment first if it is missing.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.seglab-installed
CORES   ?= all
# Training jobs declare `gpu` resources; on a CPU machine they need none (see workflow/rules/common.smk).
GPUS    ?= 1

.PHONY: setup run test ui clean dag snakemake-report

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

run: $(STAMP)  ## the whole study on the built-in dataset (config.yaml)
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(GPUS)

test: $(STAMP)  ## the test suite
	$(BIN)/python -m pytest -q tests

snakemake-report: $(STAMP)  ## Snakemake's own report of the finished study, with the figures and captions
	$(BIN)/snakemake --report results/snakemake-report.html

ui: $(STAMP)  ## browse every run: http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}

dag: $(STAMP)
	$(BIN)/snakemake --dag | dot -Tsvg > dag.svg

clean:  ## remove results and run records (data/raw is kept: it may be a long download)
	rm -rf results .snakemake mlflow.db mlruns mlartifacts .seglab
