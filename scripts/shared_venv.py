"""Create a virtual environment that reuses this interpreter's packages, except some distributions.

    python scripts/shared_venv.py NEW_VENV --without torch torchaudio 'nvidia-*' ...

The new environment sees every package of the running environment through a `.pth` file naming
a folder of links, minus the files of the distributions matched by --without (shell-style
patterns on normalised names). What it lacks, it installs itself (`pip install` into it then
resolves against the shared packages, so it downloads only what is missing). This is how CI runs
the tests on a second torch release, and how the wheel test installs the wheel alone, without a
second download of several GB.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
from pathlib import Path


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def excluded_entries(patterns: list[str]) -> set[str]:
    """Top-level names in site-packages that belong to the distributions matching `patterns`."""
    names: set[str] = set()
    for dist in importlib.metadata.distributions():
        if not any(fnmatch.fnmatch(_normalise(dist.metadata["Name"]), _normalise(p)) for p in patterns):
            continue
        for file in dist.files or []:
            names.add(file.parts[0])
    return names


def create(venv: Path, without: list[str]) -> Path:
    """Create `venv` sharing this environment's packages but `without`; its python."""
    venv = Path(venv).absolute()
    if venv.exists():
        raise SystemExit(f"{venv} exists: remove it first, or choose another path")
    # no pip nor setuptools of its own: those of this environment are shared, newer ones
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    excluded = excluded_entries(without) | {"__pycache__"}
    shared = venv / "shared-site-packages"
    shared.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in sorted(ours.iterdir()):
        # .pth files are not read from a folder a .pth names: link them for completeness only
        if entry.name not in excluded and not entry.name.startswith("__editable__"):
            (shared / entry.name).symlink_to(entry)
    (Path(site) / "shared-site-packages.pth").write_text(f"{shared}\n")
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--without", nargs="*", default=[], metavar="DIST",
                        help="distributions (shell-style patterns) the new environment must not see")
    args = parser.parse_args()
    print(create(args.venv, args.without))


if __name__ == "__main__":
    main()
