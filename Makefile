# The two commands of the README: `make quickstart` runs the main job, `make test` the tests.
# Both install what is missing first (Debian packages, .venv, the package itself).
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := 0

.PHONY: quickstart test test-oldest-torch lint bench setup

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

# scored on real recordings too: four 30 s AMI excerpts with their references (tests/data/real)
quickstart: .venv/.installed
	.venv/bin/pyannote-wavlm-prune quickstart --real-recordings tests/data/real/database.yml

# the versions a run proves, printed first (pytest -q hides its header)
VERSIONS := import sys, torch, torchaudio; print(f"test: python {sys.version.split()[0]}, torch {torch.__version__}, torchaudio {torchaudio.__version__}")

# Two test processes of one thread each (pytest-xdist), one per core: 866 tests took 14.3 min
# on an idle 2-core machine (one process of two threads was not timed on the same tree). A
# test file runs whole in one process (--dist loadfile), in its own order; each file starts
# from the same random state (tests/conftest.py), so it gives the same results alone or among
# the others.
PYTEST_WORKERS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST_PARALLEL := -n 2 --dist loadfile

test: .venv/.installed
	.venv/bin/python -c '$(VERSIONS)'
	$(PYTEST_WORKERS) .venv/bin/python -m pytest -q $(PYTEST_PARALLEL) --durations=15

# The lowest torch pyproject.toml claims, in an environment that shares .venv's other packages
# (scripts/shared_venv.py): the tests of the parts that touch torch most (model, pruning
# equivalence, export, ONNX deployment, pipeline). `make test` runs the whole suite on the
# torch pip resolves (the newest release, unless a pip configuration caps it); CI (.ci/run)
# lifts any such cap, so it runs the suite on the newest torch the registry serves, and this.
# Only torch and torchaudio are installed (--no-deps, no pip cache): the CUDA libraries of .venv
# are shared (on a CPU machine they are only loaded, never run) and triton is left out (CPU
# inference never imports it). A full install would add about 4 GB of CUDA wheels and their
# cached download, and a CI run once ran out of disk. torch 2.11 also loads cuRAND at import,
# which torch 2.15's CUDA dependencies no longer include: its own (60 MB) is added.
OLDEST_TORCH := torch==2.11.0 torchaudio==2.11.0 nvidia-curand==10.4.0.35
OLDEST_TORCH_TESTS := tests/test_model.py tests/test_pruning.py tests/test_model_pruning.py \
	tests/test_export.py tests/test_deploy.py tests/test_pipeline.py

.venv-oldest-torch/.installed: .venv/.installed
	rm -rf .venv-oldest-torch
	.venv/bin/python scripts/shared_venv.py .venv-oldest-torch \
		--without torch torchaudio triton pyannote-wavlm-prune
	.venv-oldest-torch/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir \
		--no-deps $(OLDEST_TORCH) 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	.venv-oldest-torch/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--no-build-isolation -e . 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $@

test-oldest-torch: .venv-oldest-torch/.installed
	.venv-oldest-torch/bin/python -c '$(VERSIONS)'
	$(PYTEST_WORKERS) .venv-oldest-torch/bin/python -m pytest -q $(PYTEST_PARALLEL) $(OLDEST_TORCH_TESTS)

lint: .venv/.installed
	.venv/bin/ruff check .

bench: .venv/.installed
	.venv/bin/python benchmarks/bench_pruned_wavlm.py
