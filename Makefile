# Freya backend: every target is one line that calls a real tool; `make help` lists them.
# The targets create and use .venv by themselves: a fresh machine needs only Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FREYA := $(BIN)/python -m service
# Where the embedded server, reports and results go: FREYA_DATA_DIR, as for the service itself.
DATA_DIR := $(or $(FREYA_DATA_DIR),.freya)

.DEFAULT_GOAL := help
# No "Entering directory" lines either, when called from another make: output is the target's own.
MAKEFLAGS += --no-print-directory
.PHONY: help install run migrate migration migrate-status rollback analyze vacuum purge purge-idempotency-keys seed bench loadtest db-shell db-stop db-url test lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The install writes to stderr only, so a target's output stays its own (psql "$$(make db-url)").
$(STAMP): pyproject.toml
	@echo "installing into $(VENV) (once)" >&2
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2
	@$(BIN)/python -m pip install --quiet -e '.[dev]' >&2
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the service with its dev tools

run: $(STAMP) ## serve the API on 127.0.0.1:8000 (FREYA_PORT to change), embedded PostgreSQL unless FREYA_DATABASE_URL
	$(FREYA) serve

migrate: $(STAMP) ## apply pending migrations
	$(FREYA) migrate

migration: $(STAMP) ## create the next numbered migration pair: make migration name=add_x
	$(eval problem := $(shell $(FREYA) new-migration --check '$(subst ','\'',$(name))' 2>&1))
	$(if $(problem),$(error $(problem)))
	@$(FREYA) new-migration '$(subst ','\'',$(name))'

migrate-status: $(STAMP) ## show the current revision, applied and pending migrations
	$(FREYA) migrate-status

rollback: $(STAMP) ## undo the last applied migration
	$(FREYA) rollback

analyze: $(STAMP) ## ANALYZE the service's tables (one with table=messages)
	$(FREYA) maintain analyze $(if $(table),--table $(table))

vacuum: $(STAMP) ## VACUUM (ANALYZE) the service's tables (one with table=messages)
	$(FREYA) maintain vacuum_analyze $(if $(table),--table $(table))

purge: $(STAMP) ## remove deleted rows past FREYA_RETENTION_DAYS (30) and changes past FREYA_CHANGES_RETENTION_DAYS (7)
	$(FREYA) purge

purge-idempotency-keys: $(STAMP) ## delete idempotency keys past FREYA_IDEMPOTENCY_TTL_HOURS (run it daily from cron)
	$(FREYA) purge-idempotency-keys

seed: $(STAMP) ## generate realistic data: make seed messages=1000000 seed=42 (the defaults)
	$(FREYA) seed $(if $(messages),--messages $(messages)) $(if $(seed),--seed $(seed))

bench: $(STAMP) ## benchmark hot operations: service (wrk) vs the same SQL (pgbench); only=page_50,message_by_id for some; pgbouncer=1 adds the page via PgBouncer
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m tests.bench.run $(if $(messages),--messages $(messages)) $(if $(duration),--duration $(duration)) $(if $(rounds),--rounds $(rounds)) $(if $(only),--only $(only)) $(if $(pgbouncer),--pgbouncer)

loadtest: $(STAMP) ## run the Locust mix against the running service (make run): duration=60s users=20; report under FREYA_DATA_DIR
	$(BIN)/python -m pip install --quiet -e '.[load]'
	@mkdir -p $(DATA_DIR)
	$(BIN)/locust -f tests/load/locustfile.py --headless -u $(or $(users),20) -r 5 -t $(or $(duration),60s) --host $(or $(host),http://127.0.0.1:$(or $(FREYA_PORT),8000)) --csv $(DATA_DIR)/loadtest --html $(DATA_DIR)/loadtest.html

db-shell: $(STAMP) ## open psql on the service database
	$(FREYA) db-shell

db-url: $(STAMP) ## print only the database URL, for psql and scripts (starts the embedded server if needed)
	@$(FREYA) db-url

db-stop: $(STAMP) ## stop the embedded PostgreSQL
	$(FREYA) db-stop

test: $(STAMP) ## run the test suite against a real PostgreSQL (own embedded server, or FREYA_TEST_DATABASE_URL)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check service tests
	$(BIN)/ruff format --check service tests
	$(BIN)/mypy

clean: ## remove the virtual environment and caches (not the embedded database)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.*
