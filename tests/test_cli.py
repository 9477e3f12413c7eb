"""The command line reaches every option of the library's stages, and its --help shows defaults."""

import argparse
import inspect
import re
from dataclasses import fields

import pytest
import yaml

from pyannote_wavlm_prune.cli import COMMANDS, build_parser, main
from pyannote_wavlm_prune.commands import distill, prune, train
from pyannote_wavlm_prune.commands import recipe as recipe_command
from pyannote_wavlm_prune.commands.arguments import Default, format_default, resolve_defaults
from pyannote_wavlm_prune.models.wavlm_segmentation import WavLMSegmentation
from pyannote_wavlm_prune.recipe import stages
from pyannote_wavlm_prune.recipe.run import Recipe
from pyannote_wavlm_prune.recipe.training import diarization_task
from pyannote_wavlm_prune.tasks import Distill, DistillPrune


def parameters(function) -> set[str]:
    return {name for name, parameter in inspect.signature(function).parameters.items()
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}


def subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[command]


def destinations(command: str) -> set[str]:
    return {action.dest for action in subparser(command)._actions}


class Called(Exception):
    """Raised by a stand-in stage, carrying what the command gave it."""


def forwarded(monkeypatch, stage_name: str, argv: list[str]) -> dict:
    """The keyword arguments the command `argv` gives to `stages.<stage_name>`."""
    args = resolve_defaults(build_parser(argv).parse_args(argv))

    def stand_in(*args, **kwargs):
        raise Called(args, kwargs)

    # after parsing: the defaults are read from the real stage's signature
    monkeypatch.setattr(stages, stage_name, stand_in)
    monkeypatch.setattr("pyannote_wavlm_prune.data.protocols.get_protocol", lambda *args: "P")
    with pytest.raises(Called) as called:
        args.run(args)
    return called.value.args[1]


# Parameters a stage fixes itself, or that its command takes under another name
DISTILL_FIXED = {
    "self", "protocol", "teacher",
    "duration",  # --duration, of the training budget
    "validate",  # on: the stage selects its checkpoints on the validation loss
}


def test_prune_command_reaches_every_option_of_distill_prune_and_prune_stage():
    task = (parameters(DistillPrune.__init__) | parameters(Distill.__init__)) - DISTILL_FIXED
    assert task == set(prune.TASK_OPTIONS)
    stage = parameters(stages.prune_stage) - {"protocol", "directory", "teacher", "task_options",
                                              "budget", "progress", "restart"}
    assert stage == set(prune.STAGE_OPTIONS)
    assert task | stage <= destinations("prune")


def test_prune_command_forwards_learning_rates_and_every_task_option(monkeypatch):
    kwargs = forwarded(monkeypatch, "prune_stage", [
        "prune", "--protocol", "P", "--output", "o", "--teacher", "t.ckpt",
        "--sparsity", "0.3", "--objective", "macs", "--warmup-epochs", "2", "--warmup-steps", "7",
        "--units", "head", "ffn", "--controller", "lagrangian", "--decay", "--no-exact",
        "--tolerance", "0.05", "--stop-at-target", "--distilled-layers", "0", "2",
        "--l1-weight", "0.5", "--cosine-weight", "2", "--learning-rate", "gates=5e-2",
        "student=1e-3", "--seed", "3", "--max-speakers-per-chunk", "3", "--num-workers", "1",
    ])
    assert kwargs["task_options"] == {
        "sparsity": 0.3, "objective": "macs", "warmup_epochs": 2.0, "warmup_steps": 7,
        "units": ["head", "ffn"], "controller": "lagrangian", "decay": True,
        "distilled_layers": [0, 2], "l1_weight": 0.5, "cosine_weight": 2.0,
        # 5e-2 is a number (YAML 1.1 would read a string)
        "learning_rate": {"gates": 0.05, "student": 0.001}, "seed": 3,
        "max_speakers_per_chunk": 3, "num_workers": 1,
    }
    assert (kwargs["tolerance"], kwargs["exact"], kwargs["stop_at_target"]) == (0.05, False, True)


def test_prune_command_defaults_are_the_task_s_own(monkeypatch):
    kwargs = forwarded(monkeypatch, "prune_stage",
                       ["prune", "--protocol", "P", "--output", "o", "--teacher", "t.ckpt"])
    options = kwargs["task_options"]
    signature = inspect.signature(DistillPrune.__init__).parameters
    for name in ("sparsity", "objective", "warmup_epochs", "units", "controller", "decay"):
        assert options[name] == signature[name].default, name
    assert options["learning_rate"] == DistillPrune.LEARNING_RATE_DEFAULTS
    # None: the task decides (from the teacher)
    assert "distilled_layers" not in options and "max_speakers_per_chunk" not in options
    assert kwargs["exact"] is True and kwargs["tolerance"] == 0.01


def test_distill_command_reaches_every_option_of_distill(monkeypatch):
    assert parameters(Distill.__init__) - DISTILL_FIXED == set(distill.DISTILL_OPTIONS)
    kwargs = forwarded(monkeypatch, "distill_stage", [
        "distill", "--protocol", "P", "--output", "o", "--teacher", "t", "--student", "s",
        "--learning-rate", "student=3e-4"])
    assert kwargs["task_options"]["learning_rate"] == {"student": 3e-4}
    assert kwargs["task_options"]["l1_weight"] == 1.0


# WavLMSegmentation options a teacher does not take (see commands/train.py)
MODEL_FIXED = {"self", "structure", "gates", "gates_objective", "pruned_norms", "sample_rate",
               "num_channels", "task"}


def test_train_command_reaches_every_option_of_the_model_and_the_task(monkeypatch):
    assert parameters(WavLMSegmentation.__init__) - MODEL_FIXED == set(train.MODEL_OPTIONS)
    task = parameters(diarization_task) - {"protocol", "duration", "batch_size", "cache_dir"}
    assert task == set(train.TASK_OPTIONS)
    kwargs = forwarded(monkeypatch, "train_stage", [
        "train", "--protocol", "P", "--output", "o", "--wavlm", "some/dir",
        "--learning-rate", "backend=1e-4", "--conformer", "num_layers=1",
        "--max-speakers-per-chunk", "3", "--freeze-wavlm"])
    model = kwargs["model_options"]
    assert model["wavlm"] == "some/dir" and model["freeze_wavlm"] is True
    assert model["learning_rate"] == {"backend": 1e-4}
    assert model["conformer"] == {"num_layers": 1}
    assert model["projection"] == WavLMSegmentation.PROJECTION_DEFAULTS
    assert kwargs["task_options"] == {"max_speakers_per_chunk": 3, "num_workers": 0}


def test_finetune_command_reaches_every_option_of_its_stage(monkeypatch):
    stage = parameters(stages.finetune_stage) - {"protocol", "directory", "model", "budget",
                                                 "progress", "restart"}
    assert stage == {"fresh_back_end", "task_options", "learning_rate"}
    kwargs = forwarded(monkeypatch, "finetune_stage", [
        "finetune", "--protocol", "P", "--output", "o", "--model", "m", "--keep-back-end",
        "--num-workers", "2", "--learning-rate", "wavlm=2e-5"])
    assert kwargs["fresh_back_end"] is False
    assert kwargs["task_options"] == {"max_speakers_per_chunk": 4, "num_workers": 2}
    assert kwargs["learning_rate"] == {"wavlm": 2e-5}
    # not given: the model's own learning rates
    kwargs = forwarded(monkeypatch, "finetune_stage", [
        "finetune", "--protocol", "P", "--output", "o", "--model", "m"])
    assert kwargs["learning_rate"] is None


@pytest.mark.parametrize("command", ["train", "prune", "distill", "finetune"])
def test_every_budget_option_is_reachable(command):
    budget = {field.name for field in fields(stages.Budget)} - {"trainer"}
    assert budget | {"accelerator", "devices"} <= destinations(command)


def test_key_values_options_refuse_a_pair_without_equals_sign():
    # one line, which the command line prints (argparse's usage block is not shown)
    with pytest.raises(SystemExit, match="argument --learning-rate: '0.1': expected KEY=VALUE"):
        build_parser(["prune"]).parse_args(["prune", "--protocol", "P", "--output", "o",
                                            "--teacher", "t", "--learning-rate", "0.1"])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_the_default_of_every_option(command):
    parser = subparser(command)
    text = "".join(parser.format_help().split())  # argparse wraps lines anywhere
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        default = action.default
        if isinstance(default, Default):
            default = default.value
        if default in (None, False, []) or isinstance(action, argparse._StoreTrueAction):
            continue
        shown = "".join(f"{action.help} (default: {format_default(default)})".split())
        assert shown in text, f"{command} {action.option_strings[0]}"


def test_help_shows_the_library_s_defaults():
    text = " ".join(subparser("prune").format_help().split())
    assert ("target sparsity in (0, 1), relative to the unpruned architecture; module-wise: "
            "MODULE=SPARSITY pairs") in text and "transformer=0.8) (default: 0.8)" in text
    assert "(default: student=0.0002 gates=0.02 lagrangian=0.02)" in text
    assert "(default: conv head ffn)" in text
    text = " ".join(subparser("train").format_help().split())
    assert "(default: wavlm=2e-05 backend=0.001)" in text
    assert "preset:tiny" in text and "(default: microsoft/wavlm-base-plus)" in text


def test_recipe_example_is_written_once_and_reads_as_a_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["recipe", "--example", "recipe.yml"]) == 0
    written = tmp_path / "recipe.yml"
    assert written.read_bytes() == recipe_command.EXAMPLE.read_bytes()
    recipe = Recipe.from_yaml(written)
    assert recipe.protocol == "Simulated.SpeakerDiarization.tiny"
    assert recipe.database == [str(tmp_path / "data/simulated/tiny/database.yml")]
    assert recipe.teacher["model"] == {"wavlm": {"preset": "tiny"}}
    for stage in ("teacher", "distill", "finetune"):
        assert stage in yaml.safe_load(written.read_text())
        stages.Budget.from_dict(getattr(recipe, stage)["budget"])  # valid budgets
    # never replaces a file
    written.write_text("mine")
    # a one-line refusal (exit 2), the file untouched
    assert main(["recipe", "--example", "recipe.yml"]) == 2
    assert "recipe.yml exists: expected a new file name" in capsys.readouterr().err
    assert written.read_text() == "mine"


def test_structure_summary_states_what_pruning_kept():
    from helpers import TINY_PRUNED_STRUCTURE

    from pyannote_wavlm_prune.frontends.presets import tiny_config
    from pyannote_wavlm_prune.frontends.structure import Structure

    config = tiny_config()
    structure = Structure.from_dict(TINY_PRUNED_STRUCTURE, config)
    full = Structure.full(config)
    lines = structure.summary(num_samples=32000).splitlines()
    assert lines[0] == (f"WavLM parameters: {structure.params():,} of {full.params():,} "
                        f"(sparsity {structure.sparsity('params'):.4f})")
    assert f"{structure.macs(32000):,} of {full.macs(32000):,}" in lines[1]
    assert lines[2:] == ["CNN channels: 16 24 8 32 12 20 32 (of 32 32 32 32 32 32 32)",
                         "heads per layer: 2 1 (of 4)", "FFN widths: 16 40 (of 64)"]


def test_structure_panels_are_the_unit_kinds_bar_charts(tmp_path):
    from helpers import TINY_PRUNED_STRUCTURE, tiny_model

    from pyannote_wavlm_prune.recipe.quickstart import plot_structure

    model = tiny_model(structure=TINY_PRUNED_STRUCTURE)
    assert model.structure.panels() == [
        ("CNN channels", [16, 24, 8, 32, 12, 20, 32], [32] * 7),
        ("attention heads", [2, 1], [4, 4]),
        ("FFN units", [16, 40], [64, 64]),
    ]
    assert plot_structure(model, tmp_path / "structure.png").stat().st_size > 10_000


def test_building_the_stage_parsers_imports_neither_torch_nor_pyannote_audio():
    # defaults are read from the library when a command runs (or --help), not to parse
    import subprocess
    import sys

    commands = ["train", "prune", "distill", "finetune", "recipe", "export", "optimize", "bench"]
    script = ("import sys\nfrom pyannote_wavlm_prune.cli import build_parser\n"
              f"for name in {commands}:\n    build_parser([name])\n"
              "print(sorted({'torch', 'pyannote.audio', 'lightning'} & set(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_average_runs_from_the_command_line_in_both_its_forms(tmp_path, capsys):
    import json

    import torch
    from helpers import tiny_model
    from pyannote.audio import Model

    from pyannote_wavlm_prune import save_checkpoint

    models = [tiny_model(), tiny_model()]
    run = tmp_path / "checkpoints"
    run.mkdir()
    for name, model in zip(("a.ckpt", "b.ckpt"), models):
        save_checkpoint(model, run / name)
    (run / "history.json").write_text(json.dumps({"selected": ["a.ckpt", "b.ckpt"]}))
    name = "classifier.weight"
    expected = (models[0].state_dict()[name] + models[1].state_dict()[name]) / 2
    for form, arguments in (("given", [str(run / "a.ckpt"), str(run / "b.ckpt")]),
                            ("selected", ["--run", str(run)])):
        output = tmp_path / f"{form}.ckpt"
        assert main(["average", *arguments, "--output", str(output)]) == 0
        assert capsys.readouterr().out.strip() == str(output)
        # a mean of two float32 values: exact but for the last bit of the halving's rounding
        torch.testing.assert_close(Model.from_pretrained(output).state_dict()[name], expected)
    assert "<function" not in subparser("average").format_help()


def test_prune_command_takes_module_wise_targets_a_share_of_the_files_and_a_student(monkeypatch):
    kwargs = forwarded(monkeypatch, "prune_stage", [
        "prune", "--protocol", "P", "--output", "o", "--teacher", "t.ckpt", "--student", "s.ckpt",
        "--sparsity", "cnn=0.5", "transformer=0.85", "--train-files", "0.25"])
    assert kwargs["task_options"]["sparsity"] == {"cnn": 0.5, "transformer": 0.85}
    assert kwargs["task_options"]["train_files"] == 0.25
    assert kwargs["student"] == "s.ckpt"
    base = ["prune", "--protocol", "P", "--output", "o", "--teacher", "t.ckpt"]
    args = build_parser(base).parse_args([*base, "--train-files", "10", "--sparsity", "0.9"])
    assert args.train_files == 10 and args.sparsity == 0.9 and args.student is None
    for bad, message in ((["--sparsity", "0.5", "cnn=0.5"], "one sparsity, or MODULE=SPARSITY"),
                         (["--sparsity", "cnn=2"], "'cnn=2': expected MODULE=SPARSITY"),
                         (["--train-files", "0"], "'0': expected a fraction in (0, 1]")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            build_parser(base + bad).parse_args(base + bad)
