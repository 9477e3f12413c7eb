"""`diarize`: a pipeline directory run on audio files, directories or list files, one RTTM each.

Resumable: files whose outputs exist are skipped (unless --overwrite), and the options of the
run are recorded in OUTPUT/diarize-options.json, so that a re-run with another pipeline or
other speaker counts is refused rather than mixed with the first run's results (--overwrite
starts over: the outputs of the given files are removed first; a corrupt record is named,
and --overwrite replaces it). One run at a time writes into an output: a second is refused,
naming the first (`locked_output`; a run that crashed holds nothing). A file that
cannot be diarized is reported at the end, one line each, without stopping the others; the
exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from .arguments import add_input, add_output, add_trust_argument, positive_int

RECORD = "diarize-options.json"
# held by the run writing into an output (`locked_output`)
LOCK = ".diarize.lock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "pipeline", metavar="PIPELINE",
              help="pipeline directory (or its config.yaml), as export, optimize "
                   "and import-diarizen write")
    add_input(parser, "inputs", nargs="*", metavar="INPUT",
              help="audio file, or directory searched recursively for audio files "
                   "(wav, flac, mp3, ogg, opus, m4a, ...; hidden ones skipped); "
                   "outputs mirror the paths below it")
    add_input(parser, "--list", action="append", default=[], metavar="FILE", dest="lists",
              help="text file of audio files or directories, one a line, relative to "
                   "the list's directory (blank and '#' lines skipped; repeatable); "
                   "outputs mirror the paths below the list's directory")
    add_output(parser, "--output", writes=(), required=True, metavar="DIR",
               help="directory of the outputs: <name>.rttm per file (uri: the file's "
                    "stem), outside every input")
    parser.add_argument("--json", action="store_true",
                        help="also write <name>.json: the turns (start, end, speaker), as "
                             "`pyannote-audio apply` writes them")
    speakers = parser.add_argument_group("number of speakers (default: the pipeline finds it)")
    speakers.add_argument("--num-speakers", type=positive_int, metavar="N",
                          help="exactly N speakers in every file")
    speakers.add_argument("--min-speakers", type=positive_int, metavar="N",
                          help="at least N speakers")
    speakers.add_argument("--max-speakers", type=positive_int, metavar="N",
                          help="at most N speakers")
    parser.add_argument("--device", default="auto",
                        help="torch device to run on: auto (cuda when available, else cpu), "
                             "cpu, cuda, cuda:1, mps")
    parser.add_argument("--overwrite", action="store_true",
                        help="diarize files whose outputs exist again (default: skip them, "
                             "which resumes an interrupted run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def check_speakers(args: argparse.Namespace) -> None:
    if args.num_speakers is not None and (args.min_speakers or args.max_speakers):
        raise ValueError(f"--num-speakers {args.num_speakers} with --min-speakers or "
                         "--max-speakers: expected either an exact number or bounds.")
    if args.min_speakers and args.max_speakers and args.min_speakers > args.max_speakers:
        raise ValueError(f"--min-speakers {args.min_speakers} > --max-speakers "
                         f"{args.max_speakers}: expected min <= max.")


def resolve_device(name: str):
    """The torch device `name` names ("auto": CUDA, else MPS, else the CPU)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"--device {name}: expected auto, cpu, cuda, cuda:N or mps "
                         f"({' '.join(str(error).split())}).") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here: expected cpu or auto.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                         "devices.")
    return device


def describe_pipeline(path) -> dict:
    """The pipeline directory, by its resolved path and one sha256 of every file it holds."""
    import hashlib
    from pathlib import Path

    from ..recipe.record import describe_input

    path = Path(path)
    directory = path.parent if path.is_file() else path
    digest = hashlib.sha256()
    for file in sorted(directory.rglob("*")):
        if file.is_file() and not any(part.startswith(".") for part in
                                      file.relative_to(directory).parts):
            relative = file.relative_to(directory).as_posix()
            digest.update(f"{relative}\0{describe_input(file)['sha256']}\0".encode())
    return {"path": str(directory.resolve()), "sha256": digest.hexdigest()}


def prepare_output(output, options: dict, files, overwrite: bool) -> None:
    """Refuse to resume into `output` a run made with other options (or with none recorded);
    with `overwrite`, start over instead: remove the outputs of `files` made with the other
    options first, so that an interrupted new run leaves none of them to be taken for done

    Outputs of files not given now would stay beside a record that no longer describes
    them: refused even with `overwrite`.
    """
    import json

    from ..pipelines.diarize import JSON_SUFFIX, RTTM_SUFFIX
    from ..recipe.record import differences

    record = output / RECORD
    existing = sorted(path for path in output.rglob("*") if path.is_file() and path != record
                      and path.suffix in (RTTM_SUFFIX, JSON_SUFFIX)) if output.is_dir() else []
    if not existing:
        return
    if record.is_file():
        try:
            recorded = json.loads(record.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            recorded = f"unreadable: {' '.join(str(error).split())}"
        if isinstance(recorded, dict):
            changes = differences(recorded, options)
            if not changes:
                return
            problem = f"a diarize run with other options ({'; '.join(changes)})"
        else:  # truncated, null, a list: it says nothing of how the outputs were made
            problem = (f"{existing[0].relative_to(output)} beside a corrupt {record} "
                       f"({recorded if isinstance(recorded, str) else json.dumps(recorded)}"
                       "; expected the options of the run)")
    else:
        problem = (f"{existing[0].relative_to(output)} but no {RECORD} saying how it was "
                   "made")
    if not overwrite:
        raise ValueError(f"{output} holds {problem}: expected the same options to resume, "
                         "--overwrite to start over, or another --output.")
    targets = {path for audio in files for path in audio.outputs(output, with_json=True)}
    others = [path for path in existing if path not in targets]
    if others:
        raise ValueError(
            f"{output} holds {problem}, and {others[0].relative_to(output)} (with "
            f"{len(others) - 1} more) of a file not given now: expected another --output "
            "(--overwrite replaces the outputs of the files given, and only those).")
    for path in existing:
        path.unlink()


@contextlib.contextmanager
def locked_output(output) -> Iterator[None]:
    """`output` (made if missing) locked for this run alone (`files.exclusive_lock`): a second
    run into it is refused naming the first; a run that crashed holds nothing. A directory
    made here is removed again if the run leaves nothing in it (the lock file goes at the
    end of the run)."""
    from ..files import exclusive_lock

    made = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(output / LOCK, f"--output {output}"):
            yield
    finally:
        if made and not any(output.iterdir()):
            output.rmdir()


def run(args: argparse.Namespace) -> int:
    import sys
    import traceback
    from pathlib import Path

    from .. import console
    from ..files import InputIndex, check_output_location, write_json_atomically

    if not args.inputs and not args.lists:
        raise SystemExit("no INPUT and no --list FILE: expected audio files, directories or "
                         "list files to diarize.")
    check_speakers(args)
    pipeline_path = Path(args.pipeline)
    if not pipeline_path.exists():
        raise FileNotFoundError(f"pipeline {args.pipeline} does not exist: expected a pipeline "
                                "directory (or its config.yaml).")
    if pipeline_path.is_file() and pipeline_path.suffix not in (".yaml", ".yml"):
        raise ValueError(f"pipeline {args.pipeline} is a file but no config.yaml: expected a "
                         "pipeline directory, as export, optimize and import-diarizen write "
                         "(export makes one of a segmentation checkpoint).")
    output = Path(args.output)
    # the directory, not its config.yaml: the run's record describes every file in it
    pipeline_directory = pipeline_path.parent if pipeline_path.is_file() else pipeline_path
    inputs = [("the pipeline", pipeline_directory),
              *((f"input {path}", path) for path in args.inputs),
              *((f"--list {path}", path) for path in args.lists)]
    check_output_location(output, inputs)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is not a directory: expected a directory "
                                 "for the RTTM files (made if missing).")

    from ..pipelines.diarize import describe_failure, diarize_files, find_audio, read_list

    files = find_audio(args.inputs, args.lists)
    inputs += [(f"{path} (in --list {listed})", path) for listed in args.lists
               for path in read_list(listed)]
    inputs += [(f"input {audio.path}", audio.path) for audio in files]
    record = output / RECORD
    index = InputIndex(inputs)  # every input resolved once: time linear in the files
    for audio in files:
        for target in audio.outputs(output, with_json=True):
            if target == record:
                raise ValueError(f"{audio.path} would write {record}, where this command "
                                 "records its options: expected another name.")
            # each one: a link below the output may lead into an input directory
            index.check(target)
    device = resolve_device(args.device)
    with locked_output(output):  # one run at a time writes into an output
        options = {"pipeline": describe_pipeline(pipeline_path), "num_speakers": args.num_speakers,
                   "min_speakers": args.min_speakers, "max_speakers": args.max_speakers}
        prepare_output(output, options, files, args.overwrite)

        from ..pipelines import load_pipeline

        pipeline = load_pipeline(pipeline_path).to(device)
        write_json_atomically(record, options)
        done = diarize_files(pipeline, files, output, with_json=args.json, overwrite=args.overwrite,
                             progress=not args.no_progress, num_speakers=args.num_speakers,
                             min_speakers=args.min_speakers, max_speakers=args.max_speakers)
        for audio, error in done.failed:
            if console.details():  # --debug
                traceback.print_exception(error, file=sys.stderr)
            print(f"pyannote-wavlm-prune diarize: failed: {describe_failure(audio, error)}",
                  file=sys.stderr)
        print(f"{output}: {done.summary()}")
        return 1 if done.failed else 0
