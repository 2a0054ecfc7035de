# Learning Loop: `make demo` sets up and runs the quickstart; `make test` sets up and runs the tests.
.PHONY: setup demo test test-all bench lint

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/learnloop run

test: setup
	@.venv/bin/python -m pytest -n 2 -q

test-all: setup
	@.venv/bin/python -m pytest -n 2 -q -m "slow or not slow"

lint: setup
	@.venv/bin/ruff check learnloop tests bench

bench: setup
	@.venv/bin/python bench/bench_engine.py
