"""The built wheel and sdist install and run on their own, away from the checkout.

The wheel goes into a new virtual environment outside the repository that shares the project
environment's packages but this one (scripts/shared_venv.py: no download, no second copy of
torch), so the package itself can only come from the wheel. `pip check` proves that the wheel's
declared dependencies are met.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pyannote_wavlm_prune"


def _run(command: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build` of the checkout: one wheel and one sdist."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=out)
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> dict:
    """A new venv outside the checkout with the wheel installed; its environment variables."""
    home = tmp_path_factory.mktemp("installed")
    venv = home / "venv"
    python = Path(_run([sys.executable, ROOT / "scripts" / "shared_venv.py", venv,
                        "--without", "pyannote-wavlm-prune"], cwd=home).strip())
    wheel = next(dist.glob("*.whl"))
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.update(HF_HUB_OFFLINE="1", PYANNOTE_METRICS_ENABLED="0", PATH=f"{venv / 'bin'}:{env['PATH']}")
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", "--no-index", "--no-deps", wheel], cwd=home, env=env)
    _run([*pip, "check"], cwd=home, env=env)
    return {"home": home, "venv": venv, "python": python, "env": env}


def test_wheel_and_sdist_hold_the_package_and_nothing_of_the_checkout(dist):
    wheel = zipfile.ZipFile(next(dist.glob("*.whl"))).namelist()
    assert f"{PACKAGE}/cli.py" in wheel
    assert f"{PACKAGE}/frontends/units/heads.py" in wheel
    assert f"{PACKAGE}/wavlm/__init__.py" in wheel  # the old name, for code that uses it
    assert f"{PACKAGE}/recipe/example.yml" in wheel  # what `recipe --example` writes
    assert not [n for n in wheel if n.startswith(("tests/", "benchmarks/", "docs/", "scripts/"))]
    entry_points = next(n for n in wheel if n.endswith("entry_points.txt"))
    assert "pyannote-wavlm-prune = pyannote_wavlm_prune.cli:main" in zipfile.ZipFile(
        next(dist.glob("*.whl"))).read(entry_points).decode()
    sdist = tarfile.open(next(dist.glob("*.tar.gz"))).getnames()
    assert any(n.endswith("/README.md") for n in sdist)
    assert any(n.endswith(f"/{PACKAGE}/cli.py") for n in sdist)


def test_wheel_runs_the_cli_end_to_end_away_from_the_checkout(installed):
    home, env, python = installed["home"], installed["env"], installed["python"]
    work = home / "work"
    work.mkdir()
    # the package comes from the wheel, not from the checkout
    where = _run([python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], cwd=work, env=env)
    assert Path(where.strip()).is_relative_to(installed["venv"]), where
    cli = installed["venv"] / "bin" / "pyannote-wavlm-prune"
    printed = _run([cli, "simulate", "corpus", "--preset", "tiny", "--quiet"], cwd=work, env=env)
    database, protocol = printed.split()[-2:]
    assert (work / database).resolve() == work / "corpus" / "database.yml"
    data = ["--database", database, "--protocol", protocol]
    budget = ["--max-epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1",
              "--batch-size", "4", "--no-progress"]
    _run([cli, "train", *data, "--wavlm", "preset:tiny", "--output", "teacher", *budget], cwd=work, env=env)
    _run([cli, "prune", *data, "--teacher", "teacher/model.ckpt", "--sparsity", "0.5",
          "--warmup-epochs", "0", "--output", "pruned", *budget], cwd=work, env=env)
    _run([cli, "export", "--segmentation", "pruned/pruned.ckpt", "--clustering", "OracleClustering",
          "--output", "pipeline"], cwd=work, env=env)
    _run([cli, "evaluate", "pipeline", *data, "--subset", "test", "--json", "der.json",
          "--no-progress"], cwd=work, env=env)
    report = json.loads((work / "der.json").read_text())
    assert 0.0 <= report["total"]["der"] <= 2.0, report["total"]
    assert sorted(p.name for p in work.iterdir()) == ["corpus", "der.json", "pipeline", "pruned", "teacher"]


def test_pyannote_s_packages_are_admitted_only_up_to_the_releases_ci_ran():
    """Each of pyannote's packages has an upper bound (CI prints the newest release served beside
    the one tested), and the release this suite runs on lies within it."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pyannote = [Requirement(text) for text in dependencies if text.startswith("pyannote.")]
    assert sorted(r.name for r in pyannote) == [
        "pyannote.audio", "pyannote.core", "pyannote.database", "pyannote.metrics",
        "pyannote.pipeline"]
    for requirement in pyannote:
        assert any(s.operator == "<" for s in requirement.specifier), requirement
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed), (requirement, installed)
    (audio,) = [r for r in pyannote if r.name == "pyannote.audio"]
    assert not audio.specifier.contains("4.1.0")  # not served here, so never run by CI
