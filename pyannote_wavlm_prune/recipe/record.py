"""What a stage ran with, recorded next to its checkpoints, so that a re-run is never silently wrong.

A stage's directory holds `options.json`: its name and the options it runs with (budget, task
options, input checkpoints with their sha256). Before any work, `begin_stage` compares them with
the options of the new run:

- the same: the finished result is reused, or the interrupted run resumed, and a line says which;
- different: an `OptionsChangedError` lists the differences, unless the caller asked to start
  over (`restart`), which removes what the stage wrote (and nothing else) first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Literal

from ..files import write_json_atomically

logger = logging.getLogger(__name__)

OPTIONS_FILE = "options.json"

# what a stage writes into its directory (and what restarting it removes)
STAGE_OUTPUTS = ("checkpoints", "logs", OPTIONS_FILE, "model.ckpt", "student.ckpt", "pruned.ckpt",
                 "pruning.json", "sparsity.json", "sparsity.png", "task-cache.npz")
# the diarization task's metadata cache (see training.task_cache_path)
STAGE_OUTPUT_PATTERNS = ("pyannote-wavlm-prune-*.npz",)


class OptionsChangedError(ValueError):
    """A stage's directory holds a run with other options than those asked for."""


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types (configs by their dict, paths as strings)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    elif hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    return f"<{type(value).__name__}>"


def describe_input(value: Any) -> Any:
    """A checkpoint as recorded: a file by its resolved path and sha256, a model by its hparams."""
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            return {"path": str(path.resolve()), "sha256": digest.hexdigest()}
        return os.fspath(value)
    hparams = getattr(value, "hparams", None)
    if hparams is not None:
        return {"in memory": type(value).__name__, "hparams": jsonable(dict(hparams))}
    return jsonable(value)


def _flatten(options: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(options, dict) and options:
        flat = {}
        for key, value in options.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): options}


def differences(recorded: Mapping, current: Mapping) -> list[str]:
    """'key: recorded -> current' for each option that differs (nested keys dotted)."""
    before, after = _flatten(dict(recorded)), _flatten(dict(current))
    missing = object()
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, missing), after.get(key, missing)
        if old != new:
            lines.append(f"{key}: {'(unset)' if old is missing else json.dumps(old)} -> "
                         f"{'(unset)' if new is missing else json.dumps(new)}")
    return lines


def stage_outputs(directory: Path) -> list[Path]:
    """What a stage wrote in `directory` (see STAGE_OUTPUTS)."""
    found = [directory / name for name in STAGE_OUTPUTS if os.path.lexists(directory / name)]
    for pattern in STAGE_OUTPUT_PATTERNS:
        found += sorted(directory.glob(pattern))
    return found


def remove_stage_outputs(directory: Path, inputs: Iterable[Any] = ()) -> list[Path]:
    """Remove what a stage wrote in `directory` (never one of `inputs`); return what was removed."""
    outputs = stage_outputs(directory)
    protected = {Path(path).resolve() for path in inputs if isinstance(path, (str, os.PathLike))}
    for path in outputs:
        resolved = path.resolve()
        if any(resolved == kept or resolved in kept.parents for kept in protected):
            raise ValueError(f"Restarting would remove {path}, an input of this stage: expected "
                             "inputs outside the stage's directory.")
    for path in outputs:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return outputs


def begin_stage(
    directory: str | os.PathLike,
    stage: str,
    options: Mapping[str, Any],
    result: str | os.PathLike,
    restart: bool | Literal["changed"] = False,
    inputs: Iterable[Any] = (),
) -> bool:
    """Check and record a stage's options in `directory`; return whether `result` is done

    options: what the stage runs with, recorded as JSON (`jsonable`; describe checkpoints
    with `describe_input`). restart: True to start over whatever the directory holds,
    "changed" to start over only if the options differ, False to refuse then. inputs: paths
    that restarting must never remove. Says in one line (logged) what happens: a new run,
    a resumed one, or a finished result reused.
    """
    directory = Path(directory)
    current = json.loads(json.dumps(jsonable({"stage": stage, **options})))
    record = directory / OPTIONS_FILE
    recorded = json.loads(record.read_text()) if record.is_file() else None
    # a record alone (a start that failed before writing anything) holds nothing to keep
    written = [path for path in (stage_outputs(directory) if directory.is_dir() else [])
               if path.name != OPTIONS_FILE]
    if not written:
        recorded = None
    if recorded is None and written:
        changes = [f"{directory} holds {', '.join(path.name for path in written)} but no "
                   f"{OPTIONS_FILE} saying how they were made"]
    else:
        changes = differences(recorded, current) if recorded is not None else []
    if written and (restart is True or (restart == "changed" and changes)):
        removed = remove_stage_outputs(directory, inputs)
        logger.warning("%s: starting over, removed %s", directory,
                       ", ".join(path.name for path in removed))
        changes, written = [], []
    if changes:
        raise OptionsChangedError(
            f"{directory} holds a {stage} run with other options ({'; '.join(changes)}): "
            "expected the same options to resume or reuse it. Start over with --restart "
            "(restart=True; removes what the stage wrote there) or choose another output.")
    if Path(result).is_file():
        logger.warning("%s: reusing %s (finished with the same options)", directory, Path(result).name)
        return True
    last = directory / "checkpoints" / "last.ckpt"
    if last.is_file():
        logger.warning("%s: resuming from %s (same options)", directory, last.relative_to(directory))
    else:
        logger.info("%s: starting %s", directory, stage)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(record, current)
    return False
