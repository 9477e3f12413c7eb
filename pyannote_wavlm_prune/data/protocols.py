"""Loading pyannote.database protocols: the one loader every command, stage and pipeline uses.

Each call loads its database.yml files into a registry of its own: pyannote's global registry
keeps one audio location per database name, so two corpora whose database is "Simulated"
would make each other's audio unreachable (or, worse, swap it silently since uris repeat).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def protocol_names(database_yml: str | os.PathLike) -> list[str]:
    """Full names ("Database.Task.name") of the protocols a database.yml defines."""
    try:
        with open(database_yml) as f:
            content = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{database_yml} is not valid YAML ({' '.join(str(error).split())}): "
                         "expected a pyannote.database database.yml.") from None
    expected = ("expected a pyannote.database database.yml (Protocols: DATABASE: TASK: "
                "PROTOCOL: subsets)")
    protocols = content.get("Protocols") if isinstance(content, dict) else None
    if not isinstance(content, dict) or not isinstance(protocols or {}, dict) or any(
            not isinstance(tasks or {}, dict) or any(not isinstance(names or {}, dict)
                                                     for names in (tasks or {}).values())
            for tasks in (protocols or {}).values()):
        raise ValueError(f"{database_yml} holds {type(content).__name__} content that is not "
                         f"a database.yml: {expected}.")
    return [
        f"{database}.{task}.{protocol}"
        for database, tasks in (protocols or {}).items()
        for task, names in (tasks or {}).items()
        for protocol in (names or {})
    ]


def get_protocol(
    databases: str | os.PathLike | Sequence[str | os.PathLike],
    name: str | None = None,
    *,
    registry=None,
    preprocessors: dict[str, Any] | None = None,
):
    """Return a protocol of database.yml files, with ``file["audio"]`` resolved, ready for training.

    Parameters
    ----------
    databases : path or list of paths
        database.yml files, or folders holding one (corpus roots). An empty list stands for
        pyannote's own configuration (PYANNOTE_DATABASE_CONFIG, ~/.pyannote/database.yml).
    name : str, optional
        Full ("Simulated.SpeakerDiarization.tiny") or short ("tiny") protocol name.
        Defaults to the only protocol of the files.
    registry : pyannote.database.registry.Registry, optional
        Registry to load the files into. Defaults to a new one.
    preprocessors : dict, optional
        More preprocessors, added to {"audio": FileFinder(registry)}.

    Raises
    ------
    FileNotFoundError
        For a missing database.yml.
    ValueError
        For an unknown or ambiguous protocol name, listing the known ones.
    """
    from pyannote.database import FileFinder
    from pyannote.database.registry import Registry

    files, name = resolve_protocol_name(databases, name)
    if registry is None:
        if files:
            registry = Registry()
        else:
            from pyannote.database import registry  # pyannote's configured databases
    for database_yml in files:
        registry.load_database(database_yml)
    try:
        return registry.get_protocol(
            name, preprocessors={"audio": FileFinder(registry=registry), **(preprocessors or {})}
        )
    except KeyError as error:
        raise ValueError(f"protocol {name!r} is unknown: pass the database.yml that defines it "
                         "(--database).") from error


def resolve_protocol_name(
    databases: str | os.PathLike | Sequence[str | os.PathLike], name: str | None = None
) -> tuple[list[Path], str | None]:
    """(database.yml files, full protocol name) of `get_protocol`'s arguments, checked

    Reads the files only (no pyannote import), so that a command line can check them first.
    Without files (pyannote's own configuration), `name` is returned as given.
    """
    if isinstance(databases, (str, os.PathLike)):
        databases = [databases]
    files = []
    for database in databases:
        path = Path(database)
        database_yml = path / "database.yml" if path.is_dir() else path
        if not database_yml.is_file():
            raise FileNotFoundError(f"no database.yml at {str(database)!r}: expected a "
                                    "database.yml file or a folder holding one.")
        files.append(database_yml)

    # with pyannote's own configuration, the registry knows the names (and says so on error)
    names = [n for database_yml in files for n in protocol_names(database_yml)]
    if name is None:
        if len(names) != 1:
            raise ValueError(f"{[str(f) for f in files]} define protocols {names}: pass the "
                             "name of one of them.")
        name = names[0]
    elif names and name not in names:
        matches = [n for n in names if n.split(".")[-1] == name]
        if len(matches) != 1:
            where = [str(f) for f in files] or "pyannote's database configuration"
            raise ValueError(f"protocol {name!r} is not defined in {where}: expected one of {names}.")
        name = matches[0]
    return files, name


def check_train_files(train_files) -> None:
    """Raise unless `train_files` is None, a fraction in (0, 1] or a positive count."""
    if train_files is None:
        return
    if isinstance(train_files, bool) or not (
            (isinstance(train_files, int) and train_files >= 1)
            or (isinstance(train_files, float) and 0.0 < train_files <= 1.0)):
        raise ValueError(f"train_files={train_files!r}: expected a fraction in (0, 1] (e.g. "
                         "0.25) or a positive number of files (e.g. 10).")


def training_subset(protocol, train_files: float | int, seed: int = 0):
    """`protocol` whose training set is a reproducible subset of its training files

    train_files: a fraction in (0, 1] of the files (rounded, at least one), or their number
    (at most all). The files are drawn by `random.Random(seed)` from the sorted (database,
    uri) keys, so a run draws the same files whatever the order the protocol lists them in.
    Returns a shallow copy of `protocol` whose `train()` yields those files, in the
    protocol's order (development and test sets unchanged; the protocol is not modified);
    its `train_uris` lists them.
    """
    import copy
    import random

    check_train_files(train_files)

    def key(file) -> tuple[str, str]:
        return str(file.get("database", "")), str(file["uri"])

    keys = sorted(key(file) for file in protocol.train())
    if not keys:
        raise ValueError(f"protocol {protocol.name} has no training file to choose from.")
    count = (min(train_files, len(keys)) if isinstance(train_files, int)
             else max(1, round(train_files * len(keys))))
    chosen = set(random.Random(seed).sample(keys, count))
    subset = copy.copy(protocol)

    def train():
        for file in protocol.train():
            if key(file) in chosen:
                yield file

    subset.train = train
    subset.train_uris = [uri for _, uri in sorted(chosen)]
    return subset
