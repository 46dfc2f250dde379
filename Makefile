# The two commands a developer needs: `make serve` and `make test`.
# Each creates the virtualenv and installs the project first (only when pyproject.toml changed).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test fuzz lint bench bench-migrations schema install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "taskql needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/taskql serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The differential test of the compiled path against the resolvers, with many more generated
# queries than CI's fixed count (TASKQL_FUZZ_EXAMPLES=N for another number, TASKQL_FUZZ_SEED=N
# for another sequence than CI's).
TASKQL_FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	TASKQL_FUZZ_EXAMPLES=$(TASKQL_FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/api/test_differential.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/taskql export-schema --check
	$(BIN)/taskql migrations lint

bench: $(STAMP)
	$(BIN)/python bench/graphql_inprocess.py

bench-migrations: $(STAMP)
	$(BIN)/python bench/migrations.py

schema: $(STAMP)
	$(BIN)/taskql export-schema

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
