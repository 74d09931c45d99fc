# Two commands a new user needs: `make demo` and `make test`. The virtual environment
# lives in .venv at the repository root and is (re)installed when requirements change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

# The services suite: PostgreSQL and Redis on this machine (see .ci/run, which starts them).
SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/controlplane
SERVICES_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install demo migrate test test-services lint format bench worker clean

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(INSTALLED)

install: $(INSTALLED)

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py seed_demo
	@echo "Control panel: http://$(HOST):$(PORT)/  (demo users are listed in README.md)"
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest

test-services: install
	DATABASE_URL=$(SERVICES_DATABASE_URL) REDIS_URL=$(SERVICES_REDIS_URL) $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

worker: install
	$(BIN)/celery -A controlplane worker --loglevel=INFO

bench: install
	@set -e; for script in bench/[!_]*.py; do \
		[ -e "$$script" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$script"; $(BIN)/python $$script; \
	done

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles var .pytest_cache .ruff_cache
