# The two commands of the README: `make quickstart` runs the main job, `make test` the tests.
# Both install what is missing first (Debian packages, .venv, the package itself).
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := 0

.PHONY: quickstart test lint bench setup

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

quickstart: .venv/.installed
	.venv/bin/pyannote-wavlm-prune quickstart

test: .venv/.installed
	.venv/bin/python -m pytest -q --durations=15

lint: .venv/.installed
	.venv/bin/ruff check .

bench: .venv/.installed
	.venv/bin/python benchmarks/bench_pruned_wavlm.py
