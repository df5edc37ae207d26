# The two commands: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := app

.PHONY: run test check translations messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

translations: $(VENV)/.runtime
	$(BIN)/pybabel -q compile -d protect/translations

## Run the app with the embedded default: SQLite, local blobs, demo logins.
run: $(VENV)/.runtime translations
	$(BIN)/flask db upgrade
	$(BIN)/flask protect demo --cases 500 --clocks
	@echo "protect is on http://127.0.0.1:5000 (Ctrl-C stops it)"
	$(BIN)/gunicorn --bind 127.0.0.1:5000 --worker-class gthread --workers 1 --threads 8 app:app

## Run the whole test suite, on SQLite and PostgreSQL.
test: $(VENV)/.dev translations
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

## Static checks: ruff (with bandit's security rules) and mypy, on protect/.
check: $(VENV)/.dev
	$(BIN)/ruff check protect
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache

## Re-extract translatable strings and merge them into the catalogs.
messages: $(VENV)/.runtime
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext --no-location --omit-header -o protect/translations/messages.pot .
	$(BIN)/pybabel -q update -N -i protect/translations/messages.pot -d protect/translations
