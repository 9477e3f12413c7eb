"""The `pyannote-wavlm-prune` command line: one sub-command per stage of the method.

Each sub-command lives in its own module of `pyannote_wavlm_prune.commands`, which defines
`add_arguments(parser)` and `run(args) -> int`. Only the module of the sub-command being run
is imported, so that `--help` and light commands start fast.

A user's mistake (a bad value, a missing or existing file, an output that would replace or
write into an input) is printed as one line naming it, with exit code 2 (argparse's own
errors too: no usage block); `--debug` (or PYANNOTE_WAVLM_PRUNE_DEBUG=1) shows the traceback instead.
The libraries' warnings and INFO messages, and the metrics' components on the progress bars,
are hidden (`console.quiet`) unless `--debug` is given.
Paths and protocol names are checked before any command module (and torch, pyannote) is
imported, so that such mistakes are reported at once.
SIGTERM and SIGINT end any command with one line and the status a shell gives a process the
signal ended (143, 130), whatever the command was doing (`interrupts.stop_on_signals`); the
same command, run again, resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pickle
import sys
import traceback
import zipfile

import yaml

from . import console, interrupts
from .commands.arguments import ArgumentParser, HelpFormatter, check_paths
from .files import LockedError, NotWritableError

# sub-command: (module of pyannote_wavlm_prune.commands, one-line help)
COMMANDS = {
    "quickstart": ("quickstart", "the whole method on a simulated corpus, offline, on a CPU"),
    "simulate": ("simulate", "build a simulated-conversation corpus as a pyannote protocol"),
    "train": ("train", "fine-tune a WavLMSegmentation for diarization (OUTPUT/model.ckpt)"),
    "prune": ("prune", "learn gates by distillation, average, prune (OUTPUT/pruned.ckpt)"),
    "distill": ("distill", "further distil a pruned model from its teacher (OUTPUT/model.ckpt)"),
    "finetune": ("finetune", "fine-tune a pruned model with a fresh back end (OUTPUT/model.ckpt)"),
    "average": ("average", "average checkpoints (given, or those a run selected) into one"),
    "recipe": ("recipe", "run or resume every stage from a recipe YAML file"),
    "sweep": ("sweep", "a grid of pruning strategies, objectives and targets from one teacher"),
    "export": ("export", "write a diarization pipeline directory (config.yaml + models)"),
    "import-diarizen": ("import_diarizen", "a DiariZen hub model as a pyannote 4 pipeline directory"),
    "optimize": ("optimize", "tune a pipeline's hyper-parameters on a development set"),
    "diarize": ("diarize", "run a pipeline on audio files, directories or lists: one RTTM each"),
    "evaluate": ("evaluate", "DER (and its components), RTTM files and real-time factors"),
    "bench": ("bench", "segmentation speed, parameters and MACs of checkpoints, side by side"),
    "export-onnx": ("export_onnx", "a segmentation checkpoint as a checked ONNX graph (--int8)"),
}


# what a user's mistake raises (a bug raises anything else, and keeps its traceback): bad
# values, paths, and files that cannot be read as what they should be (YAML, pickles, zips)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, NotWritableError, LockedError,
               yaml.YAMLError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile)
DEBUG_VARIABLE = "PYANNOTE_WAVLM_PRUNE_DEBUG"
# options of the sub-commands that name an input file or directory (or a hub name "org/name")
INPUT_OPTIONS = ("--teacher", "--student", "--model", "--segmentation", "--embedding", "--plda",
                 "--params")


def check_inputs(argv: list[str]) -> None:
    """Raise for an input path that does not exist or a protocol its --database lacks

    Only reads files: runs before the sub-command's module is imported.
    """
    from .files import is_hub_name

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for option in INPUT_OPTIONS:
        parser.add_argument(option)
    parser.add_argument("--protocol")
    parser.add_argument("--database", action="append", default=[])
    try:
        known, _ = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return  # malformed: the sub-command's parser says how
    for option in INPUT_OPTIONS:
        value = getattr(known, option[2:])
        if value is not None and not os.path.exists(value) and not is_hub_name(value):
            raise FileNotFoundError(f"{option} {value} does not exist: expected the path of an "
                                    "existing file or directory.")
    if known.protocol and known.database:
        from .data.protocols import resolve_protocol_name

        resolve_protocol_name(known.database, known.protocol)


def _selected(argv: list[str]) -> str | None:
    return next((token for token in argv if token in COMMANDS), None)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pyannote-wavlm-prune",
        description="WavLM segmentation for pyannote.audio, pruned by distillation.",
    )
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks of errors (or set {DEBUG_VARIABLE}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    selected = _selected(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text,
                                          formatter_class=HelpFormatter)
        if name == selected:
            module = importlib.import_module(f"pyannote_wavlm_prune.commands.{module_name}")
            module.add_arguments(subparser)
            subparser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # nothing here may phone home unless the user asks for it
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    argv = sys.argv[1:] if argv is None else list(argv)
    # anywhere on the line, not only before the sub-command
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [token for token in argv if token != "--debug"]
    loud = debug or (_selected(argv) == "quickstart" and "--verbose" in argv)
    command = _selected(argv)
    prefix = f"pyannote-wavlm-prune{' ' + command if command else ''}"
    try:
        with interrupts.stop_on_signals(), (contextlib.nullcontext() if loud else console.quiet()):
            check_inputs(argv)
            args = build_parser(argv).parse_args(argv)
            check_paths(args)  # no output replaces or writes into an input
            if not getattr(args, "trust_checkpoints", False):
                return args.run(args)
            from .models.loading import trusted_checkpoints

            with trusted_checkpoints():
                return args.run(args)
    except interrupts.Interrupted as interruption:
        if debug:
            traceback.print_exc()
        print(f"{prefix}: {interruption}", file=sys.stderr)
        return interruption.exit_status
    except USER_ERRORS as error:
        if debug:
            raise
        message = " ".join(str(error).split())
    except SystemExit as exit_:
        # the commands' own one-line refusals: raise SystemExit("message")
        if debug or not isinstance(exit_.code, str):
            raise
        message = exit_.code
    print(f"{prefix}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
