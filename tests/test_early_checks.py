"""Nothing the user gave is replaced or written into, and nothing starts that a bad value, a bad
recipe or an unwritable output would stop later (issue 24, items 1 and 7).

Every case goes through the command line (`cli.main`, in this process, so that a fault can be
simulated at the lowest level) and expects exit status 2 with one line on stderr.
"""

import errno
import hashlib
import os
import tempfile
import textwrap
from pathlib import Path

import pytest

from pyannote_wavlm_prune import files
from pyannote_wavlm_prune.cli import main

PROTOCOL = "Simulated.SpeakerDiarization.tiny"


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(directory) -> dict[str, str]:
    """Every file under `directory` (relative path -> sha256)."""
    return {str(p.relative_to(directory)): sha256(p) for p in sorted(Path(directory).rglob("*"))
            if p.is_file()}


def refused(argv, capsys) -> str:
    """The one line the command line prints for `argv`, which it must refuse (exit 2)."""
    capsys.readouterr()
    assert main([str(token) for token in argv]) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.count("\n") == 0 and "Traceback" not in stderr, stderr
    return stderr


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working directory with the inputs a user gives: a checkpoint (the only copy), a
    pipeline directory, a database.yml, a WavLM directory, a folder of recordings."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.ckpt").write_bytes(b"the only copy of a trained model")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "config.yaml").write_text("params: {}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "database.yml").write_text(textwrap.dedent("""
        Protocols:
          Simulated:
            SpeakerDiarization:
              tiny:
                train: {uri: lists/train.txt}
    """))
    (tmp_path / "wavlm").mkdir()
    (tmp_path / "wavlm" / "config.json").write_text("{}")
    (tmp_path / "voices" / "alice").mkdir(parents=True)
    (tmp_path / "voices" / "alice" / "hello.wav").write_bytes(b"RIFF")
    os.link(tmp_path / "model.ckpt", tmp_path / "hardlink.onnx")
    os.symlink(tmp_path / "model.ckpt", tmp_path / "symlink.json")
    return tmp_path


# ---------------------------------------------------------------- 1. inputs are never written

DATABASE = ("--protocol", PROTOCOL, "--database", "data/database.yml")

# (command line, what the error says): each output lands on, in or over an input
COLLISIONS = {
    "export-onnx onto a hard link of its checkpoint": (
        ["export-onnx", "model.ckpt", "--output", "hardlink.onnx", "--overwrite"],
        "--output hardlink.onnx is or contains the checkpoint"),
    "bench --json onto a symbolic link to a checkpoint": (
        ["bench", "model.ckpt", "--json", "symlink.json"], "--json symlink.json is or contains a checkpoint"),
    "bench --json onto a hard link of a checkpoint": (
        ["bench", "model.ckpt", "--json", "hardlink.onnx"], "--json hardlink.onnx is or contains a checkpoint"),
    "average onto a hard link of a checkpoint it averages": (
        ["average", "model.ckpt", "model.ckpt", "--output", "hardlink.onnx"],
        "--output hardlink.onnx is or contains a checkpoint to average"),
    "evaluate --json onto the pipeline's config.yaml": (
        ["evaluate", "pipeline", *DATABASE, "--json", "pipeline/config.yaml"],
        "--json pipeline/config.yaml is or lies inside the pipeline"),
    "evaluate --rttm inside the pipeline directory": (
        ["evaluate", "pipeline", *DATABASE, "--rttm", "pipeline/rttm"],
        "--rttm pipeline/rttm is or lies inside the pipeline"),
    "export --overwrite over the directory holding its --params": (
        ["export", "--segmentation", "model.ckpt", "--params", "pipeline/config.yaml", "--output",
         "pipeline", "--overwrite"], "--output pipeline is or contains --params"),
    "export --overwrite over the directory holding its --database": (
        ["export", "--segmentation", "model.ckpt", "--train-embedding", *DATABASE, "--output",
         "data", "--overwrite"], "--output data is or contains --database"),
    "optimize --journal onto its database.yml": (
        ["optimize", "pipeline", "--output", "tuned", *DATABASE, "--journal", "data/database.yml"],
        "--journal data/database.yml is or contains --database"),
    "optimize --output over the pipeline it tunes, by a relative path": (
        ["optimize", "pipeline", "--output", "./pipeline/../pipeline", *DATABASE, "--overwrite"],
        "is or contains the pipeline to tune"),
    "simulate a corpus inside its --source recordings": (
        ["simulate", "voices/corpus", "--source", "voices"], "ROOT voices/corpus is or lies inside --source"),
    "train a stage inside the --wavlm directory": (
        ["train", *DATABASE, "--wavlm", "wavlm", "--output", "wavlm/teacher"],
        "--output wavlm/teacher is or lies inside --wavlm"),
    "prune into the directory of its teacher, whose name a stage writes": (
        ["prune", *DATABASE, "--teacher", "model.ckpt", "--output", "."],
        "--output . would write model.ckpt there, which is or holds --teacher"),
    "finetune into the directory of its model": (
        ["finetune", *DATABASE, "--model", "model.ckpt", "--output", "."],
        "--output . would write model.ckpt there, which is or holds --model"),
    "distill a stage onto its student file": (
        ["distill", *DATABASE, "--teacher", "pipeline/config.yaml", "--student", "model.ckpt",
         "--output", "model.ckpt"], "--output model.ckpt is --student"),
    "import-diarizen into the directory of its --embedding": (
        ["import-diarizen", "pipeline", "--embedding", "voices/alice/hello.wav", "--output", "voices"],
        "--output voices is or contains --embedding"),
}


@pytest.mark.parametrize("case", sorted(COLLISIONS))
def test_no_command_replaces_or_writes_into_an_input(workspace, capsys, case):
    argv, expected = COLLISIONS[case]
    before = tree(workspace)
    message = refused(argv, capsys)
    assert expected in message and "expected" in message, message
    assert tree(workspace) == before  # nothing replaced, nothing written, no probe left


def test_every_command_that_writes_declares_its_outputs_and_inputs():
    """An argument named like an output or an input, left undeclared, would escape the check."""
    import argparse

    from pyannote_wavlm_prune.cli import COMMANDS, INPUT_OPTIONS, build_parser
    from pyannote_wavlm_prune.commands.arguments import PATHS

    outputs = {"output", "json", "rttm", "journal", "root", "data"}
    inputs = {"teacher", "student", "model", "segmentation", "embedding", "plda", "params",
              "database", "checkpoint", "checkpoints", "pipeline", "src", "structure", "source",
              "run_directory", "wavlm", "inputs", "lists"} | {option[2:] for option in INPUT_OPTIONS}
    for command in COMMANDS:
        parser = build_parser([command])
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        subparser = action.choices[command]
        declared = subparser.get_default(PATHS) or {}
        for argument in subparser._actions:
            if argument.nargs == 0:  # a flag (diarize --json) names no path
                continue
            if argument.choices is not None:  # a choice (import-diarizen --pipeline) neither
                continue
            role = "output" if argument.dest in outputs else "input" if argument.dest in inputs \
                else None
            if role is not None and not (command == "recipe" and argument.dest == "recipe"):
                assert declared.get(argument.dest, (None,))[0] == role, (command, argument.dest)


def test_the_working_directory_and_new_places_are_still_accepted(workspace):
    from pyannote_wavlm_prune.files import check_output_location

    inputs = [("--teacher", "model.ckpt"), ("--database", "data/database.yml")]
    # a stage in the working directory, a new file beside the inputs, a sibling directory
    check_output_location(".", [("--model", "pipeline/config.yaml")], writes=("model.ckpt",))
    check_output_location("model.onnx", inputs)
    check_output_location(workspace / "exp" / "2-prune", inputs, writes=("pruned.ckpt",))
    with pytest.raises(ValueError, match="is or contains the working directory"):
        check_output_location(workspace, inputs)


# ---------------------------------------------------------------- 7. option values

# (command line, what the one line must name)
BAD_VALUES = {
    "non-numeric learning rate": (
        ["prune", *DATABASE, "--teacher", "model.ckpt", "--output", "exp", "--learning-rate",
         "student=fast"], "argument --learning-rate: 'student=fast': expected KEY=VALUE with a "
                          "positive number, e.g. gates=0.05"),
    "negative learning rate": (
        ["train", *DATABASE, "--output", "exp", "--learning-rate", "wavlm=-1e-5"],
        "argument --learning-rate: 'wavlm=-1e-5': expected KEY=VALUE with a positive number, "
        "e.g. gates=0.05"),
    "non-numeric batch size": (
        ["train", *DATABASE, "--output", "exp", "--batch-size", "many"],
        "argument --batch-size: expected a positive integer, got 'many'"),
    "zero batch size": (
        ["distill", *DATABASE, "--teacher", "model.ckpt", "--student", "model.ckpt", "--output",
         "exp", "--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
    "negative chunk duration": (
        ["finetune", *DATABASE, "--model", "model.ckpt", "--output", "exp", "--duration", "-2"],
        "argument --duration: expected a positive number, got '-2'"),
    "sparsity of 1": (
        ["prune", *DATABASE, "--teacher", "model.ckpt", "--output", "exp", "--sparsity", "1"],
        "argument --sparsity: expected a number in (0, 1), got '1'"),
    "sparsity not a number": (
        ["prune", *DATABASE, "--teacher", "model.ckpt", "--output", "exp", "--sparsity", "nan"],
        "argument --sparsity: expected a number in (0, 1), got 'nan'"),
    "zero max steps": (
        ["train", *DATABASE, "--output", "exp", "--max-steps", "0"],
        "argument --max-steps: expected a positive integer or -1, got '0'"),
    "zero segmentation step": (
        ["export", "--segmentation", "model.ckpt", "--output", "deploy", "--segmentation-step", "0"],
        "argument --segmentation-step: expected a number in (0, 1] (the sliding window's step, "
        "as a share of its duration), got '0'"),
    "zero repeats": (["bench", "model.ckpt", "--repeats", "0"],
                     "argument --repeats: expected a positive integer, got '0'"),
    "negative collar": (["evaluate", "pipeline", *DATABASE, "--collar", "-0.25"],
                        "argument --collar: expected a non-negative number, got '-0.25'"),
    "infinite tolerance": (["export-onnx", "model.ckpt", "--output", "m.onnx", "--tolerance", "inf"],
                           "argument --tolerance: expected a non-negative number, got 'inf'"),
    "overlap of 1": (["simulate", "corpus", "--overlap", "1"],
                     "argument --overlap: expected a ratio in [0, 1), got '1'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_bad_option_value_is_one_line_naming_it_before_any_work(workspace, capsys, case):
    argv, expected = BAD_VALUES[case]
    before = tree(workspace)
    message = refused(argv, capsys)
    assert message == f"pyannote-wavlm-prune {argv[0]}: error: {expected}"
    assert tree(workspace) == before


def test_a_missing_required_option_is_one_line_too(workspace, capsys):
    assert refused(["prune", *DATABASE, "--output", "exp"], capsys) == (
        "pyannote-wavlm-prune prune: error: the following arguments are required: --teacher")


# ---------------------------------------------------------------- 7. recipes

RECIPE = """\
protocol: Simulated.SpeakerDiarization.tiny
database: data/database.yml
experiment: exp
teacher:
  model: {wavlm: {preset: tiny}}
  budget: {max_epochs: 1, batch_size: 4, duration: 2.0, k: 1}
prune:
  sparsity: 0.5
  budget: {max_epochs: 1}
distill:
  budget: {max_epochs: 1}
finetune:
  budget: {max_epochs: 1}
"""

# (a change to the recipe above: (old, new), the one line's end)
BAD_RECIPES = {
    "YAML syntax error": (("  sparsity: 0.5\n", "  sparsity: [0.5\n"),
                          "recipe.yml:9:9: not valid YAML (while parsing a flow sequence; expected ',' or "
                          "']', but got ':')"),
    "misspelt top-level key": (("protocol:", "protocl:"),
                               "recipe.yml has unknown keys ['protocl'] (did you mean 'protocol'?)"),
    "misspelt prune key": (("  sparsity: 0.5", "  sparsty: 0.5"),
                           "prune has unknown keys ['sparsty'] (did you mean 'sparsity'?)"),
    "misspelt budget key": (("max_epochs: 1, batch_size: 4", "max_epoch: 1, batch_size: 4"),
                            "teacher.budget has unknown keys ['max_epoch'] (did you mean "
                            "'max_epochs'?)"),
    "misspelt model option": (("{wavlm: {preset: tiny}}", "{wavlm: {preset: tiny}, conformr: {}}"),
                              "teacher.model has unknown keys ['conformr'] (did you mean "
                              "'conformer'?)"),
    "misspelt conformer key": (("{wavlm: {preset: tiny}}",
                                "{wavlm: {preset: tiny}, conformer: {num_layer: 2}}"),
                               "teacher.model.conformer has unknown keys ['num_layer'] (did you "
                               "mean 'num_layers'?)"),
    "sparsity of the wrong type": (("  sparsity: 0.5", "  sparsity: high"),
                                   "prune.sparsity='high': expected a number or a mapping."),
    "sparsity out of range": (("  sparsity: 0.5", "  sparsity: 1.5"),
                              "sparsity=1.5: expected a target in (0, 1)"),
    "unknown objective": (("  sparsity: 0.5", "  sparsity: 0.5\n  objective: flops"),
                          "prune.objective='flops': expected one of ['params', 'macs']."),
    "batch size as a string": (("batch_size: 4", "batch_size: '4'"),
                               "teacher.budget.batch_size='4': expected a positive integer."),
    "zero batch size": (("batch_size: 4", "batch_size: 0"),
                        "teacher.budget.batch_size=0: expected a positive integer."),
    "negative duration": (("duration: 2.0", "duration: -2.0"),
                          "teacher.budget.duration=-2.0: expected a positive chunk duration"),
    "learning rate as a string": (("distill:\n  budget: {max_epochs: 1}",
                                   "distill:\n  budget: {max_epochs: 1}\n  task: "
                                   "{learning_rate: {student: fast}}"),
                                  "distill.task.learning_rate.student='fast': expected a number."),
    "negative learning rate": (("finetune:\n  budget: {max_epochs: 1}",
                                "finetune:\n  budget: {max_epochs: 1}\n  learning_rate: "
                                "{wavlm: -1.0e-5}"),
                               "finetune.learning_rate.wavlm=-1e-05: expected a positive learning "
                               "rate."),
    "flag as a string": (("finetune:\n  budget: {max_epochs: 1}",
                          "finetune:\n  budget: {max_epochs: 1}\n  fresh_back_end: 'no'"),
                         "finetune.fresh_back_end='no': expected true or false."),
    "task option the stage sets itself": (("  sparsity: 0.5", "  sparsity: 0.5\n  task: "
                                                              "{duration: 4.0}"),
                                          "prune.task has unknown keys ['duration']"),
    "missing teacher checkpoint": (("  model: {wavlm: {preset: tiny}}", "  checkpoint: t.ckpt"),
                                   "teacher.checkpoint t.ckpt does not exist"),
    "experiment onto the recipe itself": (("experiment: exp", "experiment: recipe.yml"),
                                          "recipe.yml is the recipe ("),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_a_bad_recipe_is_one_line_before_the_teacher_trains(workspace, capsys, monkeypatch, case):
    from pyannote_wavlm_prune.recipe import run

    (old, new), expected = BAD_RECIPES[case]
    assert old in RECIPE
    (workspace / "recipe.yml").write_text(RECIPE.replace(old, new, 1))

    def trains(*args, **kwargs):
        raise AssertionError("a stage started")

    for stage in ("train_stage", "prune_stage", "distill_stage", "finetune_stage"):
        monkeypatch.setattr(run, stage, trains)
    message = refused(["recipe", "recipe.yml"], capsys)
    assert message.startswith("pyannote-wavlm-prune recipe: error: ") and expected in message, message
    assert not (workspace / "exp").exists()


def test_the_example_recipe_passes_validation(workspace, capsys, monkeypatch):
    from pyannote_wavlm_prune.recipe.run import Recipe

    assert main(["recipe", "--example", "example.yml"]) == 0
    recipe = Recipe.from_yaml("example.yml")
    assert recipe.prune["sparsity"] == 0.5  # read and validated, nothing run


# ---------------------------------------------------------------- 7. full and read-only disks

@pytest.fixture
def read_only(monkeypatch, workspace):
    """`workspace`/read-only, where creating a file fails with EROFS (as on a read-only mount:
    root, which runs the tests, ignores permission bits)."""
    place = workspace / "read-only"
    place.mkdir()
    mkstemp, mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse(original):
        def create(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == place.resolve():
                raise OSError(errno.EROFS, "Read-only file system", str(dir))
            return original(*args, dir=dir, **kwargs)
        return create

    monkeypatch.setattr(tempfile, "mkstemp", refuse(mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse(mkdtemp))
    return place


def loading_fails(monkeypatch):
    """Make loading any model a test failure: the refusal must come before it."""
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("pyannote_wavlm_prune.models.loading.load_model", load)
    monkeypatch.setattr("pyannote_wavlm_prune.pipelines.parts.load_model", load)


@pytest.mark.parametrize("argv, output", [
    (["export-onnx", "model.ckpt", "--output", "read-only/model.onnx"], "read-only/model.onnx"),
    (["export", "--segmentation", "model.ckpt", "--output", "read-only/pipeline"],
     "read-only/pipeline"),
    (["bench", "model.ckpt", "--json", "read-only/bench.json"], "read-only/bench.json"),
    (["train", *DATABASE, "--output", "read-only"], "read-only"),
])
def test_a_read_only_output_is_said_before_any_work(read_only, capsys, monkeypatch, argv, output):
    loading_fails(monkeypatch)
    message = refused(argv, capsys)
    assert message == (f"pyannote-wavlm-prune {argv[0]}: error: {output} is read-only (a "
                       "read-only file system): expected a writable place.")
    assert list(read_only.iterdir()) == []


def test_a_place_no_one_may_write_is_said_as_such(workspace, capsys):
    """sysfs refuses new files even to root: a real EACCES, no simulation."""
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys here")
    try:
        descriptor, probe = tempfile.mkstemp(dir="/sys")
    except OSError as error:
        assert error.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
    else:
        os.close(descriptor)
        os.unlink(probe)
        pytest.skip("/sys accepts new files here")
    message = refused(["export-onnx", "model.ckpt", "--output", "/sys/model.onnx"], capsys)
    assert message.startswith("pyannote-wavlm-prune export-onnx: error: /sys/model.onnx is "
                              "read-only (")


class FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file `write_atomically` opens (files.py's `open`) fails to write, as on a full
    disk."""
    monkeypatch.setattr(files, "open", lambda *args, **kwargs: FullDisk(open(*args, **kwargs)),
                        raising=False)


def test_a_full_disk_is_said_as_such_and_leaves_nothing(workspace, capsys, full_disk):
    message = refused(["recipe", "--example", "out/recipe.yml"], capsys)
    assert message == ("pyannote-wavlm-prune recipe: error: no space left on device writing "
                       "out/recipe.yml: expected room for it (free some space, or write "
                       "elsewhere).")
    assert list((workspace / "out").iterdir()) == []  # the temporary file is gone


def test_a_full_disk_while_a_checkpoint_is_written_is_said_as_such(workspace, capsys, monkeypatch):
    from helpers import tiny_model

    from pyannote_wavlm_prune import save_checkpoint

    first = save_checkpoint(tiny_model(), workspace / "epoch=1.ckpt")
    second = save_checkpoint(tiny_model(), workspace / "epoch=2.ckpt")
    monkeypatch.setattr(files, "open", lambda *args, **kwargs: FullDisk(open(*args, **kwargs)),
                        raising=False)
    message = refused(["average", first, second, "--output", "out/average.ckpt"], capsys)
    assert message == ("pyannote-wavlm-prune average: error: no space left on device writing "
                       "out/average.ckpt: expected room for it (free some space, or write "
                       "elsewhere).")
    assert list((workspace / "out").iterdir()) == []
