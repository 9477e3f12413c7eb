"""Diarize many audio files into one RTTM (and optionally JSON) file each, resumably.

`find_audio` turns what a user names (audio files, directories searched recursively, list
files of paths) into a sorted list of `AudioInput`, each with the name its outputs take under
the output directory; `diarize_files` runs a pipeline on each, writes its outputs atomically,
skips files whose outputs exist (so that a re-run resumes), and carries on past a file that
fails, reporting every failure at the end.

Output names mirror a file's path relative to the input that named it: a directory's files
keep their sub-directories (recordings/day1/a.wav -> OUTPUT/day1/a.rttm), a list entry its
path relative to the list's directory, a file given by itself its name (OUTPUT/a.rttm). Two
files that would share an output (a.wav and a.flac side by side, or two inputs holding
day1/a.wav) are refused before any work.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.core import Annotation
from tqdm.auto import tqdm

from ..files import write_atomically

# what a directory search takes (lower case; a file named on the command line or in a list is
# taken whatever its extension): formats FFmpeg, and so torchcodec, decodes
AUDIO_EXTENSIONS = (".aac", ".ac3", ".aif", ".aifc", ".aiff", ".amr", ".au", ".caf", ".flac",
                    ".m4a", ".mka", ".mp2", ".mp3", ".oga", ".ogg", ".opus", ".snd", ".sph",
                    ".w64", ".wav", ".webm", ".wma", ".wv")
RTTM_SUFFIX = ".rttm"
JSON_SUFFIX = ".json"


@dataclass(frozen=True)
class AudioInput:
    """An audio file to diarize, and the name of its outputs relative to the output directory

    name: e.g. PurePath("day1/a"): outputs "day1/a.rttm" (and "day1/a.json").
    """

    path: Path
    name: PurePath

    @property
    def uri(self) -> str:
        """The file's stem, as RTTM files name it (whitespace, which RTTM forbids, made "_")."""
        return re.sub(r"\s", "_", self.name.name)

    def outputs(self, directory: Path, with_json: bool = False) -> list[Path]:
        """The RTTM file (and the JSON file) this input writes under `directory`."""
        suffixes = (RTTM_SUFFIX, JSON_SUFFIX) if with_json else (RTTM_SUFFIX,)
        return [directory / self.name.parent / (self.name.name + suffix) for suffix in suffixes]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _audio_under(directory: Path) -> list[Path]:
    """Audio files under `directory`, recursively, sorted; hidden files and directories
    (".git", macOS's "._a.wav") and what is no regular file (a named pipe) skipped, links to
    directories not followed."""
    found = []
    for root, directories, files in os.walk(directory):
        directories[:] = sorted(name for name in directories if not _is_hidden(name))
        found += [Path(root) / name for name in sorted(files)
                  if not _is_hidden(name) and Path(name).suffix.lower() in AUDIO_EXTENSIONS
                  and (Path(root) / name).is_file()]  # no pipe, socket or device to block on
    return found


def _absolute(path: Path) -> Path:
    """`path` made absolute, ".." removed, links kept (as the user wrote it)."""
    return Path(os.path.normpath(os.path.abspath(path)))


def _is_under(path: Path, root: Path) -> bool:
    return _absolute(root) in _absolute(path).parents


def _relative_name(path: Path, root: Path | None) -> PurePath:
    """`path` relative to `root` without its suffix when it lies under `root`, else its stem."""
    if root is not None and _is_under(path, root):
        return _absolute(path).relative_to(_absolute(root)).with_suffix("")
    return PurePath(path.stem)


def read_list(list_file: str | os.PathLike) -> list[Path]:
    """The paths a list file names: one a line, relative to the list's directory; blank lines
    and lines starting with "#" skipped."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"--list {list_file} is not a file: expected a text file "
                                "with one audio file or directory a line.")
    try:
        text = list_file.read_text()
    except UnicodeDecodeError as error:
        raise ValueError(f"--list {list_file} is not text ({error.reason} at byte "
                         f"{error.start}): expected a text file with one audio file or "
                         "directory a line.") from None
    paths = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(os.path.expanduser(entry))
        path = path if path.is_absolute() else list_file.parent / path
        if not path.exists():
            raise FileNotFoundError(f"{list_file}, line {number}: {entry} does not exist "
                                    f"(looked for {path}): expected an audio file or directory, "
                                    "relative to the list's directory.")
        paths.append(path)
    return paths


def find_audio(inputs: Iterable[str | os.PathLike] = (),
               lists: Iterable[str | os.PathLike] = ()) -> list[AudioInput]:
    """The audio files `inputs` (files or directories) and `lists` (list files) name, each once

    Sorted by output name, so that two runs on the same inputs go in the same order. Raises
    for a missing input, a directory without audio, or two files that would share an output.
    """
    named: list[tuple[Path, Path | None, str]] = []  # (file or directory, root of names, given as)
    for entry in inputs:
        path = Path(entry)
        if not path.exists():
            raise FileNotFoundError(f"input {entry} does not exist: expected an audio file or a "
                                    "directory of audio files.")
        named.append((path, path if path.is_dir() else None, str(entry)))
    for list_file in lists:
        for path in read_list(list_file):
            # below the list's directory: named from it; elsewhere: as if given by itself
            root = Path(list_file).parent
            if not _is_under(path, root):
                root = path if path.is_dir() else None
            named.append((path, root, f"{path} (in {list_file})"))

    found: dict[Path, AudioInput] = {}
    for path, root, given in named:
        files = _audio_under(path) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"input {given} holds no audio file: expected files ending in one "
                             f"of {', '.join(AUDIO_EXTENSIONS)} (at any depth).")
        for file in files:
            # the same file named twice (a directory and one of its files) is diarized once
            found.setdefault(file.resolve(), AudioInput(file, _relative_name(file, root)))

    by_name: dict[PurePath, AudioInput] = {}
    for audio in found.values():
        other = by_name.setdefault(audio.name, audio)
        if other is not audio:
            raise ValueError(
                f"{other.path} and {audio.path} would both write {audio.name}{RTTM_SUFFIX}: "
                "expected files of different names (rename one, or give their directories "
                "from a common parent, whose sub-directories the outputs mirror).")
    return [by_name[name] for name in sorted(by_name, key=str)]


@dataclass
class DiarizationRun:
    """What `diarize_files` did: files diarized, skipped (done before) and failed (with why)."""

    diarized: list[AudioInput] = field(default_factory=list)
    skipped: list[AudioInput] = field(default_factory=list)
    failed: list[tuple[AudioInput, BaseException]] = field(default_factory=list)

    def summary(self) -> str:
        total = len(self.diarized) + len(self.skipped) + len(self.failed)
        return (f"{total} files: {len(self.diarized)} diarized, {len(self.skipped)} already "
                f"done (skipped), {len(self.failed)} failed")


def serialize(output: DiarizeOutput | Annotation) -> dict:
    """JSON of a pipeline's output, as pyannote's `pyannote-audio apply` writes it
    ({"diarization": [{"start", "end", "speaker"}, ...], "exclusive_diarization": [...]})."""
    if isinstance(output, Annotation):  # a legacy pipeline: no exclusive diarization
        output = DiarizeOutput(speaker_diarization=output,
                               exclusive_speaker_diarization=Annotation(uri=output.uri))
        return {"diarization": output.serialize()["diarization"]}
    return output.serialize()


def diarize_files(
    pipeline,
    files: Sequence[AudioInput],
    output: str | os.PathLike,
    with_json: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **speakers: int | None,
) -> DiarizationRun:
    """Diarize each of `files` with `pipeline` into `output` (see `AudioInput.outputs`)

    Parameters
    ----------
    pipeline : pyannote.audio SpeakerDiarization pipeline
        Instantiated (e.g. `load_pipeline(directory)`).
    files : sequence of AudioInput
        What to diarize (see `find_audio`).
    output : path
        Directory of the outputs (made if missing); check it first with
        `files.check_output_location`, so that no input is written into.
    with_json : bool, optional
        Also write each file's turns as JSON (see `serialize`). Defaults to False.
    overwrite : bool, optional
        Diarize files whose outputs exist again. Defaults to False: they are skipped, so
        that a re-run resumes an interrupted one (outputs are written atomically: one that
        exists is whole).
    progress : bool, optional
        Show a progress bar, one step per file. Defaults to True.
    speakers : int or None
        num_speakers, min_speakers, max_speakers, passed to the pipeline (None: not given).

    Returns
    -------
    run : DiarizationRun
        A file whose decoding or diarization raised an Exception is in `run.failed`, with
        the exception, and the others go on; KeyboardInterrupt and SystemExit stop the run.
    """
    output = Path(output)
    speakers = {name: value for name, value in speakers.items() if value is not None}
    run = DiarizationRun()
    bar = tqdm(total=len(files), desc="Diarizing", unit="file", disable=not progress)
    # the files handed to the pipeline, not yet done, with their outputs
    queue: deque[tuple[AudioInput, list[Path]]] = deque()

    def pending() -> Iterator[dict]:
        for audio in files:
            targets = audio.outputs(output, with_json)
            if not overwrite and all(target.is_file() for target in targets):
                run.skipped.append(audio)
                bar.update()
                continue
            bar.set_postfix_str(str(audio.name), refresh=False)
            queue.append((audio, targets))
            yield {"audio": str(audio.path), "uri": audio.uri}

    for _, result in _each_diarized(pipeline, pending(), speakers):
        audio, targets = queue.popleft()
        bar.update()
        try:
            if isinstance(result, Exception):
                raise result
            diarization = result if isinstance(result, Annotation) else result.speaker_diarization
            rttm = diarization.to_rttm()  # before anything is written: it may refuse the labels
            content = [rttm.encode()]
            if with_json:
                content.append(json.dumps(serialize(result), indent=2).encode())
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            run.failed.append((audio, error))
            continue
        for target, data in zip(targets, content):
            write_atomically(target, lambda file, data=data: file.write(data))
        run.diarized.append(audio)
    bar.close()
    return run


def _each_diarized(pipeline, files: Iterable[dict], speakers: dict) -> Iterator[tuple]:
    """(file, output or the exception it raised) for each of `files`, in order: through the
    pipeline's `apply_batch` (pyannote's batch convention) when it has one."""
    if hasattr(pipeline, "apply_batch"):
        yield from pipeline.apply_batch(files, errors="yield", **speakers)
        return
    for file in files:
        try:
            yield file, pipeline(file, **speakers)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
            yield file, error


def describe_failure(audio: AudioInput, error: BaseException) -> str:
    """One line: the file and why it failed."""
    message = " ".join(str(error).split())
    if not isinstance(error, (ValueError, OSError)) or not message:
        message = f"{type(error).__name__}: {message}".rstrip(": ")
    return f"{audio.path}: {message}"

