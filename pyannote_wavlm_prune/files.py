"""Writing files and directories so that a reader sees the old one or the whole new one.

One home for how outputs reach their place: a file through a temporary file renamed onto it
(`write_atomically`, or `atomic_path` for a writer that takes a path), a directory through a staging directory renamed onto it
(`place_directory`), both with the modes a plain `open`/`mkdir` would give under the user's
umask, and the check that an output does not swallow the working directory or an input
(`check_output_location`). A signal that arrives while a directory is being renamed into
place waits until it is (`interrupts.uninterrupted`): the old directory or the new one is
there, never neither.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .interrupts import uninterrupted


def umask() -> int:
    """The process's umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode `open` (0o666) or `mkdir` (0o777) would give a new file under the umask."""
    return (0o777 if directory else 0o666) & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file next to `path`, for a writer that takes a path; renamed onto
    `path` when the block ends, removed when it raises (a signal's `Interrupted` too)

    The temporary file (private while written, as mkstemp makes it) gets the mode of a plain
    `open` under the user's umask before the rename, so that teammates read what the umask
    lets them read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, default_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(file object) on a temporary file next to `path`, then rename it to `path`
    (see `atomic_path`)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        write(file)
    return Path(path)


def finite_or_none(value):
    """`value` with NaN and infinities (in dicts and lists, at any depth) made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def write_json_atomically(path: str | os.PathLike, content) -> Path:
    """`content` as strict JSON (NaN and infinities refused), written by `write_atomically`."""
    text = json.dumps(content, indent=1, allow_nan=False)
    return write_atomically(path, lambda file: file.write(text.encode()))


def is_hub_name(value: object) -> bool:
    """Whether `value` reads as a Hugging Face hub name ("org/name") rather than a local path."""
    return (isinstance(value, str) and not os.path.exists(value) and value.count("/") == 1
            and not value.startswith((".", "/", "~")) and Path(value).suffix == "")


def give_default_modes(root: str | os.PathLike) -> None:
    """Give `root` and everything under it the modes of a plain mkdir/open under the umask."""
    root = Path(root)
    root.chmod(default_mode(directory=True))
    for path in root.rglob("*"):
        if not path.is_symlink():
            path.chmod(default_mode(directory=path.is_dir()))


def check_output_location(output: str | os.PathLike, inputs: Iterable[tuple[str, object]] = ()) -> None:
    """Refuse an `output` that is, or contains, the working directory or one of `inputs`, or
    lies inside an input directory (writing there would change an input)

    inputs: (what, path) pairs, e.g. ("--segmentation", "exp/model.ckpt"); entries that are
    not paths (models in memory, hub names that do not exist locally) are skipped.
    """
    target = Path(output).resolve()
    protected = [(what, Path(path)) for what, path in inputs
                 if isinstance(path, (str, os.PathLike)) and os.path.lexists(path)]
    for what, path in [("the working directory", Path.cwd()), *protected]:
        path = path.resolve()
        if path == target or target in path.parents:
            raise ValueError(f"output {output} is or contains {what} ({path}): expected a "
                             "place of its own, that holds none of the inputs.")
    for what, path in protected:
        path = path.resolve()
        if path.is_dir() and path in target.parents:
            raise ValueError(f"output {output} lies inside {what} ({path}), an input: expected "
                             "a place outside the inputs, which are never written into.")


def is_empty_directory(path: Path) -> bool:
    """Whether `path` is a directory (not a link to one) with nothing in it."""
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def place_directory(
    staging: str | os.PathLike,
    directory: str | os.PathLike,
    overwrite: bool = False,
    replaceable: Callable[[Path], None] | None = None,
) -> Path:
    """Rename the finished `staging` directory to `directory`; return `directory`

    `directory` must not exist, or be an empty directory. With `overwrite`, an existing
    directory is replaced, once `replaceable(directory)` has accepted it (it raises to
    refuse: say, a directory this project did not write). Writers to one `directory` take
    turns (a lock on its parent directory, released even by a killed process), so of two
    concurrent writers without `overwrite`, one succeeds and the other gets a
    FileExistsError: never a silent replacement. A replaced directory is moved aside, then
    deleted; nothing is left beside `directory`. `staging` must be on the same file system
    (a sibling of `directory`).
    """
    staging, directory = Path(staging), Path(directory)
    parent = os.open(directory.parent, os.O_RDONLY)
    try:
        fcntl.flock(parent, fcntl.LOCK_EX)
        _place(staging, directory, overwrite, replaceable)
    finally:
        os.close(parent)
    return directory


def _place(staging: Path, directory: Path, overwrite: bool,
           replaceable: Callable[[Path], None] | None) -> None:
    retired = None
    with uninterrupted():  # between the renames, `directory` is not there
        if os.path.lexists(directory) and not is_empty_directory(directory):
            if not overwrite:
                raise FileExistsError(f"{directory} exists (another writer may just have written "
                                      "it): expected a new or empty directory (or overwrite).")
            if not directory.is_dir() or directory.is_symlink():
                raise FileExistsError(f"{directory} is not a directory: expected a directory to "
                                      "replace.")
            if replaceable is not None:
                replaceable(directory)
            # an empty directory may be renamed onto: the name is unique and ours
            retired = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.",
                                            suffix=".old"))
            try:
                os.rename(directory, retired)
            except BaseException:
                retired.rmdir()
                raise
        try:
            # onto nothing or an empty directory; a non-empty one (a writer that takes no lock)
            # makes the rename fail rather than replace it
            os.rename(staging, directory)
        except OSError as error:
            if retired is not None and not os.path.lexists(directory):
                os.rename(retired, directory)
                retired = None
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FileExistsError(f"{directory} appeared while it was written: expected a new "
                                      "or empty directory.") from error
            raise
        if retired is not None:
            shutil.rmtree(retired)
