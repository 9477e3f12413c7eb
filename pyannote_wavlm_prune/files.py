"""Writing files and directories so that a reader sees the old one or the whole new one.

One home for how outputs reach their place: a file through a temporary file renamed onto it
(`write_atomically`, or `atomic_path` for a writer that takes a path), a directory through a staging directory renamed onto it
(`place_directory`), both with the modes a plain `open`/`mkdir` would give under the user's
umask; the check that an output does not swallow the working directory, replace an input or
write into one (`check_output_location`); and a full disk or a read-only place said as such,
before the work where it can be (`check_writable`) and when a write fails (`writing`). A
signal that arrives while a directory is being renamed into place waits until it is
(`interrupts.uninterrupted`): the old directory or the new one is there, never neither.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import tempfile
import time
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


class NotWritableError(OSError):
    """An output that cannot be written: no space left, a read-only place (one line)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)  # str(error) is the message alone, without "[Errno N]"
        self.errno = code


# errno -> what the error says of the output
NOT_WRITABLE = {
    errno.ENOSPC: "no space left on device writing {path}: expected room for it (free some "
                  "space, or write elsewhere).",
    errno.EDQUOT: "disk quota exceeded writing {path}: expected room for it (free some space, "
                  "or write elsewhere).",
    errno.EROFS: "{path} is read-only (a read-only file system): expected a writable place.",
    errno.EACCES: "{path} is read-only (permission denied): expected a writable place.",
    errno.EPERM: "{path} is read-only (operation not permitted): expected a writable place.",
}


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a write's failure for want of space or permission into a `NotWritableError`
    naming `path` (the output being written), with the OSError as its cause."""
    try:
        yield
    except NotWritableError:
        raise
    except OSError as error:
        if error.errno not in NOT_WRITABLE:
            raise
        raise NotWritableError(error.errno, NOT_WRITABLE[error.errno].format(path=path)) from error


def nearest_existing(path: Path) -> Path:
    """`path`, or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(output: str | os.PathLike, into: bool = False) -> None:
    """Raise a `NotWritableError` now, before any long work, unless `output` can be written

    A probe file is created, then removed, where the output's writer will create its files:
    beside `output` (or, with `into`, inside it, for a directory written into), or in the
    closest directory that exists above it.
    """
    output = Path(output)
    place = nearest_existing(output if into and output.is_dir() else output.parent)
    with writing(output):
        if not place.is_dir():
            raise NotWritableError(errno.ENOTDIR, f"{output}: {place} is not a directory: "
                                                  "expected a directory to write in.")
        descriptor, probe = tempfile.mkstemp(dir=place, prefix=".write-probe.", suffix=".tmp")
        os.close(descriptor)
        os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file next to `path`, for a writer that takes a path; renamed onto
    `path` when the block ends, removed when it raises (a signal's `Interrupted` too)

    The temporary file (private while written, as mkstemp makes it) gets the mode of a plain
    `open` under the user's umask before the rename, so that teammates read what the umask
    lets them read.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                 suffix=".tmp")
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
    (see `atomic_path`; a full disk or a read-only place said as such, see `writing`)."""
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


def _identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of what `path` names, following links; None if nothing is there."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _is_or_under(path: Path, ancestor: Path) -> bool:
    """Whether `path` is `ancestor` or lies under it, compared resolved (links, `..`, relative
    paths) and by identity (hard links, bind mounts)"""
    path, ancestor = path.resolve(), ancestor.resolve()
    identity = _identity(ancestor)
    return any(candidate == ancestor or (identity is not None and _identity(candidate) == identity)
               for candidate in (path, *path.parents))


class InputIndex:
    """Inputs, each resolved once, against which many outputs are checked in time linear in
    the number of inputs and outputs (`check`); `check_output_location` checks one output.

    inputs: (what, path) pairs, e.g. ("--segmentation", "exp/model.ckpt"); entries that are
    not paths (models in memory, hub names that do not exist locally) are skipped.
    """

    def __init__(self, inputs: Iterable[tuple[str, object]] = ()):
        self.protected = [(what, Path(path)) for what, path in inputs
                          if isinstance(path, (str, os.PathLike)) and os.path.lexists(path)]
        self._identities: dict[Path, tuple[int, int] | None] = {}
        # what an output written whole must not be: the working directory, an input, or a
        # directory above one (resolved paths and identities, each naming the first such input)
        self._holders: dict[object, tuple[str, Path]] = {}
        # what an output must not lie inside: an input directory
        self._directories: dict[object, tuple[str, Path]] = {}
        for what, path in [("the working directory", Path.cwd()), *self.protected]:
            resolved = path.resolve()
            for place in (resolved, *resolved.parents):
                if place in self._holders:
                    break  # so are the places above it
                self._holders[place] = (what, path)
                identity = self._identity(place)
                if identity is not None:
                    self._holders.setdefault(identity, (what, path))
            if what != "the working directory" and resolved.is_dir():
                self._directories.setdefault(resolved, (what, path))
                identity = self._identity(resolved)
                if identity is not None:
                    self._directories.setdefault(identity, (what, path))

    def _identity(self, path: Path) -> tuple[int, int] | None:
        """`_identity` of a resolved path, asked of the file system once per path."""
        if path not in self._identities:
            self._identities[path] = _identity(path)
        return self._identities[path]

    def _lookup(self, table: dict, place: Path) -> tuple[str, Path] | None:
        found = table.get(place)
        if found is None:
            identity = self._identity(place)
            found = table.get(identity) if identity is not None else None
        return found

    def check(self, output: str | os.PathLike, whole: bool = True, name: str = "output") -> None:
        """Refuse an `output` that lies inside an input directory and, when written `whole`
        (a file, or a directory placed whole), one that is or contains the working directory
        or an input (see `check_output_location`)."""
        target = Path(output).resolve()
        if whole:
            found = self._lookup(self._holders, target)
            if found is not None:
                what, path = found
                raise ValueError(f"{name} {output} is or contains {what} ({path.resolve()}): "
                                 "expected a place of its own, that holds none of the inputs.")
        for place in (target, *target.parents):
            found = self._lookup(self._directories, place)
            if found is not None:
                what, path = found
                raise ValueError(f"{name} {output} is or lies inside {what} "
                                 f"({path.resolve()}), an input: expected a place outside the "
                                 "inputs, which are never written into.")


def check_output_location(
    output: str | os.PathLike,
    inputs: Iterable[tuple[str, object]] = (),
    writes: Iterable[str] | None = None,
    name: str = "output",
) -> None:
    """Refuse an `output` that would replace, or write into, one of `inputs`

    The one check every command's outputs go through (`commands.arguments.check_paths`), and
    the library's writers of whole directories too. Paths are compared resolved (symbolic
    links, `..`, relative paths) and by what they name (a hard link is the file it links).

    writes=None: `output` is written or replaced whole (a file; a directory placed whole,
    that `overwrite` replaces). It must not be, or contain, the working directory or an input.
    writes=names: `output` is a directory written into (a stage's directory, a folder of RTTM
    files). It must not be an input, and none of the `names` it writes (or removes on a
    restart) there may be, or contain, an input.
    Either way, `output` must not lie inside an input directory: inputs are never written into.

    inputs: (what, path) pairs, e.g. ("--segmentation", "exp/model.ckpt"); entries that are
    not paths (models in memory, hub names that do not exist locally) are skipped.
    name: how the error names `output` (e.g. "--json"). Many outputs against the same inputs:
    `InputIndex(inputs).check(output)` each, which resolves every input once.
    """
    index = InputIndex(inputs)
    if writes is not None:
        target = Path(output)
        written = [target / entry for entry in writes]
        for what, path in index.protected:
            if _is_or_under(target, path) and not path.is_dir():
                raise ValueError(f"{name} {output} is {what} ({path.resolve()}): expected a "
                                 "directory of its own, never an input.")
            clash = next((entry for entry in written if _is_or_under(path, entry)), None)
            if clash is not None:
                raise ValueError(f"{name} {output} would write {clash.name} there, which is or "
                                 f"holds {what} ({path.resolve()}): expected a directory where "
                                 "no input has the name of an output.")
    index.check(output, whole=writes is None, name=name)


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
    with writing(directory):
        return _place_directory(Path(staging), Path(directory), overwrite, replaceable)


def _place_directory(staging: Path, directory: Path, overwrite: bool,
                     replaceable: Callable[[Path], None] | None) -> Path:
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


class LockedError(OSError):
    """What another run holds (an exclusive lock on an output)."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if missing, removed at the end) while
    inside, or raise LockedError naming the holder (its pid, host and start, written there)

    The operating system's lock (flock) is released when its holder ends, however it ends: a
    lock file left by a run that crashed or was killed is stale, and is taken over, never
    mistaken for a live one. A lock taken on a file that its holder removed meanwhile is
    no lock: it is checked to be the file at `path` still, else taken again.
    """
    path = Path(path)
    for _ in range(10):
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, default_mode())
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            try:
                with open(path, errors="replace") as file:
                    holder = " ".join(file.read().split())[:200]
            except OSError:
                holder = ""
            raise LockedError(f"{what} is in use by another run ({holder or 'starting'}): "
                              "expected one run at a time; wait for it to end, or choose "
                              "another output.") from None
        if _identity(path) == _descriptor_identity(descriptor):
            break
        os.close(descriptor)  # the holder removed it as we locked it: take the new one
    else:
        raise LockedError(f"{what}: its lock file {path} keeps changing: expected one run at a "
                          "time.")
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n"
                 .encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: the next run makes a new one
        os.close(descriptor)  # releases the lock


def _descriptor_identity(descriptor: int) -> tuple[int, int]:
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino
