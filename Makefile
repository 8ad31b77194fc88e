# seglab: every target builds the pinned environment first if it is missing.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.seglab-installed
CORES   ?= all
# Training jobs declare `gpu` resources; on a CPU machine they need none (see workflow/rules/common.smk).
GPUS    ?= 1
# pytest-xdist workers for the tests: three workflows side by side keep 2 cores busy while each
# chain waits on one process's imports or a service (see tests/conftest.py): 11.8 min vs 15.4 with two.
TEST_WORKERS ?= 3

.PHONY: setup run test test-fast ui pull clean dag snakemake-report

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

run: $(STAMP)  ## the whole study on the built-in dataset (config.yaml)
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(GPUS)

test: $(STAMP)  ## the test suite
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

test-fast: $(STAMP)  ## the inner loop: everything but the whole-workflow (e2e) tests, under 2 minutes
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not e2e" tests

snakemake-report: $(STAMP)  ## Snakemake's own report of the finished study, with the figures and captions
	$(BIN)/snakemake --report results/snakemake-report.html

# MLflow 3's UI opens an experiment on its GenAI overview unless the page says
# workflowType=machine_learning (or "Model training" was picked once in that browser):
# the links printed first open each study's runs table directly.
ui: $(STAMP)  ## browse every run: http://127.0.0.1:5000
	@$(BIN)/python -c 'from seglab.tracking import print_ui_links; print_ui_links()'
	$(BIN)/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}

# DVC writes pulled files with fresh times in no particular order, so Snakemake would see
# inputs newer than outputs and re-run the whole study. When `dvc status` confirms that the
# pulled results are the ones dvc.lock records for this config.yaml and this code, marking
# them up to date (`snakemake --touch`, in DAG order) is exact. Dropping Snakemake's mtime
# rerun trigger instead would also hide real changes: a changed key reaches the jobs as a
# newer stage config file, and a fresh clone has no Snakemake metadata to compare against.
# Every study file a dvc.yaml stage runs (`cmd: snakemake --configfile <file> ...`).
DVC_STUDIES = $(shell sed -n 's/^ *cmd:.*--configfile \([^ ]*\).*/\1/p' dvc.yaml | sort -u)

pull: $(STAMP)  ## fetch the data and weights of the checked-out dvc.lock; Snakemake then has nothing to do
	$(BIN)/dvc pull
	@if $(BIN)/dvc status --quiet; then \
		for study in $(DVC_STUDIES); do \
			$(BIN)/snakemake --configfile $$study --touch --cores 1 --quiet all || exit 1; \
		done; \
		echo "seglab: pulled results marked up to date for Snakemake ($(DVC_STUDIES))"; \
	else \
		echo "seglab: a study file (config.yaml ...) or the code differ from dvc.lock: the pulled results are out of date;"; \
		echo "        run 'dvc repro' (or 'make run') to update them. Nothing was marked up to date."; \
	fi

dag: $(STAMP)
	$(BIN)/snakemake --dag | dot -Tsvg > dag.svg

clean:  ## remove results and run records (data/raw is kept: it may be a long download)
	rm -rf results .snakemake mlflow.db mlruns mlartifacts .seglab
