"""Checking a protocol's references (RTTM turns, UEM regions) before anything trains on them.

pyannote.database reads an RTTM as it comes: a turn with a negative duration becomes an
empty segment that disappears, a negative or NaN start, a turn far past the file's end or the
same turn written twice are kept, and training goes on silently. `check_references` reads
the RTTM and UEM files a protocol names, line by line, against each file's audio, and refuses
them in one line naming the file and the line of each problem.
"""

from __future__ import annotations

import inspect
import math
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# turns and regions may end this far after the audio (RTTM times are rounded to the ms; an
# annotation tool's last turn may end on a frame boundary after the last sample)
END_TOLERANCE = 0.05
# problems named in the error (their count says how many more)
SHOWN = 5


def _sources(protocol: Any, subset: str) -> dict[str, tuple[str, Path]]:
    """{"annotation" / "annotated": (path template, database.yml)} of a protocol's subset as
    its database.yml gives them ({} for a protocol that pyannote.database did not build
    from a database.yml, whose references are not checked here)."""
    # the partialmethod itself (a class attribute), which holds what database.yml says
    method = inspect.getattr_static(type(protocol), f"{subset}_iter", None)
    keywords = getattr(method, "keywords", None) or {}
    entries, database_yml = keywords.get("entries"), keywords.get("database_yml")
    if not isinstance(entries, dict) or database_yml is None:
        return {}
    return {key: (entries[key].lstrip("_"), Path(database_yml))
            for key in ("annotation", "annotated") if isinstance(entries.get(key), str)}


def _path_of(template: str, database_yml: Path, file: Any) -> Path | None:
    """The file `template` (placeholders such as {uri} filled from `file`) names, as
    pyannote.database resolves it (as given, or relative to database.yml's directory)."""
    from pyannote.database.custom import resolve_path

    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    try:
        return resolve_path(Path(template.format(**{name: file[name] for name in fields})),
                            database_yml)
    except (KeyError, IndexError, ValueError, FileNotFoundError):
        return None


def _lines(path: Path, cache: dict) -> dict[str, list[tuple[int, list[str]]]]:
    """{uri: [(line number, fields)]} of an RTTM or UEM file (its uri is field 1 or 0)."""
    if path not in cache:
        by_uri: dict[str, list[tuple[int, list[str]]]] = {}
        rttm = path.suffix.lower() == ".rttm"
        with open(path, errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields or fields[0].startswith((";", "#")):
                    continue
                if rttm and fields[0] != "SPEAKER":
                    continue  # pyannote keeps SPEAKER lines only
                uri = fields[1] if rttm and len(fields) > 1 else fields[0]
                by_uri.setdefault(uri, []).append((number, fields))
        cache[path] = by_uri
    return cache[path]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _turn_problems(path: Path, lines, duration: float) -> Iterable[str]:
    seen: dict[tuple[str, str, str], int] = {}
    for number, fields in lines:
        where = f"{path} line {number}"
        if len(fields) < 8:
            yield f"{where}: {len(fields)} fields, expected 10 (SPEAKER uri 1 start duration " \
                  "<NA> <NA> speaker <NA> <NA>)"
            continue
        start, length = _number(fields[3]), _number(fields[4])
        if not (math.isfinite(start) and start >= 0):
            yield f"{where}: start {fields[3]}, expected a finite time >= 0"
        elif not (math.isfinite(length) and length > 0):
            yield f"{where}: duration {fields[4]}, expected a finite duration > 0"
        elif start + length > duration + END_TOLERANCE:
            yield f"{where}: the turn ends at {start + length:g} s, after the audio ({duration:g} s)"
        key = (fields[3], fields[4], fields[7])
        if key in seen:
            yield f"{where}: repeats line {seen[key]} (speaker {fields[7]} at {fields[3]} s)"
        else:
            seen[key] = number


def _region_problems(path: Path, lines, duration: float) -> Iterable[str]:
    for number, fields in lines:
        where = f"{path} line {number}"
        if len(fields) < 4:
            yield f"{where}: {len(fields)} fields, expected 4 (uri channel start end)"
            continue
        start, end = _number(fields[2]), _number(fields[3])
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            yield f"{where}: region {fields[2]} to {fields[3]}, expected finite 0 <= start < end"
        elif end > duration + END_TOLERANCE:
            yield f"{where}: the region ends at {end:g} s, after the audio ({duration:g} s)"


def reference_problems(file: Any, sources: dict[str, tuple[str, Path]],
                       cache: dict | None = None) -> list[str]:
    """What is wrong with the RTTM turns and UEM regions of one protocol file (`sources`, see
    `_sources`), each naming its file and line."""
    from pyannote.audio import Audio

    cache = {} if cache is None else cache
    paths = [(key, _path_of(*sources[key], file)) for key in sources]
    paths = [(key, path) for key, path in paths if path is not None and path.is_file()]
    if not paths:
        return []
    duration = Audio().get_duration(file)
    problems: list[str] = []
    for key, path in paths:
        lines = _lines(path, cache).get(file["uri"], [])
        check = _turn_problems if key == "annotation" else _region_problems
        problems += [f"{file['uri']}: {problem}" for problem in check(path, lines, duration)]
    return problems


def check_references(protocol: Any, subsets: Iterable[str] = ("train", "development")) -> None:
    """Raise a one-line ValueError naming each bad turn or region (file and line) of the
    protocol's `subsets`, before any training reads them."""
    problems: list[str] = []
    cache: dict = {}
    for subset in subsets:
        sources = _sources(protocol, subset)
        if not sources:
            continue
        for file in getattr(protocol, subset)():
            problems += reference_problems(file, sources, cache)
    problems = list(dict.fromkeys(problems))  # subsets may share files
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise ValueError(
            f"protocol {protocol.name}: {len(problems)} bad reference lines: "
            f"{'; '.join(problems[:SHOWN])}{more}. Expected turns with a start >= 0 and a "
            "duration > 0 within the audio, each once, and UEM regions within the audio.")
