"""Checkpoints load without running code; exported ONNX graphs are checked when they load.

A hostile checkpoint here is a working one (a tiny model's) that also carries an object whose
unpickling creates a directory, the marker: pickle's REDUCE calls os.makedirs. Loaded with
weights_only=False (pyannote's Model.from_pretrained) the marker appears; refused, it must not.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from diarizen_helpers import TINY_BACKEND as DIARIZEN_BACKEND
from diarizen_helpers import TINY_PRUNED, write_hub
from helpers import FAST_PIPELINE, TINY_BACKEND, TINY_PRUNED_STRUCTURE, random_wespeaker, tiny_model
from pyannote.audio import Model, Pipeline

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.cli import main
from pyannote_wavlm_prune.models.loading import (
    UntrustedCheckpointError,
    checkpoint_globals,
    load_model,
    read_checkpoint,
    trusted_checkpoints,
)
from pyannote_wavlm_prune.pipelines import export_pipeline, load_pipeline

DATA = Path(__file__).parent / "data"


class RunsCode:
    """Unpickled, creates the directory `marker` (what any code could do instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        # exist_ok: a trusted load unpickles twice, as pyannote's Model.from_pretrained does
        return os.makedirs, (self.marker, 0o777, True)


def hostile_copy(checkpoint: Path, target: Path, marker: Path) -> Path:
    """`checkpoint`, still a working one, with an entry whose unpickling creates `marker`."""
    content = torch.load(checkpoint, weights_only=False)
    content["surprise"] = RunsCode(marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, target)
    return target


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory) -> Path:
    return save_checkpoint(tiny_model(duration=2.0, structure=TINY_PRUNED_STRUCTURE),
                           tmp_path_factory.mktemp("models") / "pruned.ckpt")


@pytest.fixture
def hostile(segmentation, tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    return hostile_copy(segmentation, tmp_path / "hostile.ckpt", marker), marker


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ refused, nothing runs

@pytest.mark.parametrize("command", [
    ["bench", "{hostile}", "--repeats", "1", "--warmup", "0", "--duration", "1", "--no-progress"],
    ["export-onnx", "{hostile}", "--output", "{tmp}/model.onnx"],
    ["export", "--segmentation", "{hostile}", "--clustering", "OracleClustering", "--output",
     "{tmp}/pipeline"],
    ["average", "{hostile}", "{hostile}", "--output", "{tmp}/average.ckpt"],
])
def test_a_checkpoint_that_runs_code_is_refused_by_the_command_line_before_it_runs(
        command, hostile, tmp_path, capsys):
    path, marker = hostile
    argv = [token.format(hostile=path, tmp=tmp_path) for token in command]
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert str(path) in error and "os.makedirs" in error and "--trust-checkpoints" in error
    assert "run any code" in error
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.ckpt"]  # nothing written


def test_trust_checkpoints_loads_it_with_pickle_s_full_power(hostile, capsys):
    path, marker = hostile
    argv = ["bench", str(path), "--repeats", "1", "--warmup", "0", "--duration", "1",
            "--no-progress"]
    assert main([*argv, "--trust-checkpoints"]) == 0
    assert marker.is_dir()  # what trusting means: its code ran
    assert "params" in capsys.readouterr().out  # the bench table


def test_load_model_refuses_it_and_trusted_true_loads_it(hostile):
    path, marker = hostile
    with pytest.raises(UntrustedCheckpointError, match=r"needs os\.makedirs"):
        load_model(path, "teacher")
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(path)
    assert not marker.exists()
    model = load_model(path, "teacher", trusted=True)
    assert marker.is_dir() and model.structure is not None


def test_every_checkpoint_loading_command_offers_trust_with_its_risk():
    import argparse

    from pyannote_wavlm_prune.cli import COMMANDS, build_parser

    for command in set(COMMANDS) - {"simulate"}:
        (action,) = [a for a in build_parser([command])._actions
                     if isinstance(a, argparse._SubParsersAction)]
        text = " ".join(action.choices[command].format_help().split())
        assert "--trust-checkpoints" in text, command
        assert "can then run any code it carries" in text, command


@pytest.fixture(scope="module")
def pipeline_directory(segmentation, tmp_path_factory) -> Path:
    return export_pipeline(tmp_path_factory.mktemp("pipelines") / "oracle", segmentation,
                           clustering="OracleClustering", **FAST_PIPELINE)


def hostile_pipeline(pipeline_directory: Path, target: Path, marker: Path) -> Path:
    import shutil

    shutil.copytree(pipeline_directory, target)
    checkpoint = target / "segmentation" / "pytorch_model.bin"
    hostile_copy(checkpoint, checkpoint, marker)
    return target


def test_a_pipeline_directory_whose_checkpoint_runs_code_is_refused(pipeline_directory,
                                                                     tmp_path):
    marker = tmp_path / "marker"
    directory = hostile_pipeline(pipeline_directory, tmp_path / "pipeline", marker)
    checkpoint = directory / "segmentation" / "pytorch_model.bin"
    # pyannote's own loader, reaching this package's class through config.yaml
    with pytest.raises(UntrustedCheckpointError, match=rf"{checkpoint}.*os\.makedirs"):
        Pipeline.from_pretrained(directory)
    with pytest.raises(UntrustedCheckpointError):
        load_pipeline(directory)
    assert not marker.exists()
    with trusted_checkpoints():
        assert Pipeline.from_pretrained(directory) is not None
    assert marker.is_dir()


def test_load_pipeline_trusted_true_loads_it(pipeline_directory, tmp_path):
    marker = tmp_path / "marker"
    directory = hostile_pipeline(pipeline_directory, tmp_path / "pipeline", marker)
    load_pipeline(directory, trusted=True, segmentation_step=1.0)
    assert marker.is_dir()


def test_evaluate_refuses_a_pipeline_directory_whose_checkpoint_runs_code(
        pipeline_directory, tiny_corpus, tmp_path, capsys):
    marker = tmp_path / "marker"
    directory = hostile_pipeline(pipeline_directory, tmp_path / "pipeline", marker)
    argv = ["evaluate", str(directory), "--protocol", "Simulated.SpeakerDiarization.tiny",
            "--database", str(tiny_corpus / "database.yml"), "--no-progress"]
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert str(directory / "segmentation" / "pytorch_model.bin") in error
    assert "os.makedirs" in error and "--trust-checkpoints" in error
    assert not marker.exists()


def test_a_config_naming_another_class_is_refused_before_pyannote_builds_it(
        pipeline_directory, tmp_path):
    """pyannote's Pipeline.from_pretrained calls the class config.yaml names: torch.hub.load
    would import the directory's hubconf.py."""
    import shutil

    marker = tmp_path / "marker"
    directory = tmp_path / "pipeline"
    shutil.copytree(pipeline_directory, directory)
    (directory / "hubconf.py").write_text(f"import os\nos.makedirs({str(marker)!r})\n")
    config = yaml.safe_load((directory / "config.yaml").read_text())
    config["pipeline"] = {"name": "torch.hub.load", "params": {
        "repo_or_dir": str(directory), "model": "anything", "source": "local"}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UntrustedCheckpointError, match="names pipeline class torch.hub.load"):
        load_pipeline(directory)
    assert not marker.exists()


def test_a_checkpoint_naming_a_class_outside_pyannote_and_this_package_is_not_imported(
        segmentation, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    (tmp_path / "planted.py").write_text(f"import os\nos.makedirs({str(marker)!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    content = read_checkpoint(segmentation)
    content["pyannote.audio"]["architecture"] = {"module": "planted", "class": "Model"}
    torch.save(content, tmp_path / "planted.ckpt")
    with pytest.raises(UntrustedCheckpointError, match="names class planted.Model"):
        load_model(tmp_path / "planted.ckpt")
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_named_as_such_not_as_untrusted(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"model checkpoint {path} could not be loaded") as raised:
        load_model(path)
    assert not isinstance(raised.value, UntrustedCheckpointError)


def test_the_checkpoint_of_an_older_format_still_loads_without_trust():
    from helpers import network_depth, rounding_bound

    model = load_model(DATA / "old-format-large-pruned.ckpt").eval()
    recorded = torch.load(DATA / "old-format-large-pruned.outputs.pt", weights_only=True)
    with torch.inference_mode():
        outputs = model(recorded["waveforms"])
    # recorded on another machine and release: equal up to float32 rounding (test_architecture)
    difference = (outputs - recorded["outputs"]).abs().max().item()
    assert difference <= rounding_bound(recorded["outputs"], network_depth(model))


# ------------------------------------------- what the project writes loads without trust

ONE_STEP = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1, "batch_size": 4,
            "duration": 2.0, "k": 1, "trainer": {"accelerator": "cpu"}}


@pytest.fixture(scope="module")
def written(tiny_protocol, tmp_path_factory) -> dict[str, Path]:
    """One file of every kind of checkpoint the project writes: {kind: path}."""
    from pyannote_wavlm_prune import import_diarizen
    from pyannote_wavlm_prune.pipelines.embedding import train_embedding
    from pyannote_wavlm_prune.recipe import (
        Budget,
        distill_stage,
        finetune_stage,
        prune_stage,
        train_stage,
    )
    from pyannote_wavlm_prune.wavlm.presets import tiny_config

    root = tmp_path_factory.mktemp("written")
    budget = Budget(**ONE_STEP)
    teacher = train_stage(tiny_protocol, root / "1-teacher", budget=budget, progress=False,
                          model_options={"wavlm": tiny_config(), **TINY_BACKEND})
    pruned = prune_stage(tiny_protocol, root / "2-prune", teacher, budget=budget, progress=False,
                         sparsity=0.5, warmup_steps=1)
    distilled = distill_stage(tiny_protocol, root / "3-distill", teacher, pruned, budget=budget,
                              progress=False)
    final = finetune_stage(tiny_protocol, root / "4-finetune", distilled, budget=budget,
                           progress=False)
    embedding = train_embedding(tiny_protocol, root / "embedding.ckpt", dimension=16,
                                max_epochs=1, trainer_options={"limit_train_batches": 1})
    pipeline = export_pipeline(root / "pipeline", final, embedding, **FAST_PIPELINE)
    hub = root / "diarizen-tiny"
    write_hub(hub, TINY_PRUNED, seed=2, backend=DIARIZEN_BACKEND)
    wespeaker = save_checkpoint(random_wespeaker(), root / "wespeaker" / "pytorch_model.bin")
    imported = import_diarizen(hub, root / "imported", embedding=wespeaker, structure=TINY_PRUNED)
    return {
        "trained (a Trainer's epoch checkpoint)": root / "1-teacher/checkpoints/epoch=0.ckpt",
        "resumable (a Trainer's last.ckpt)": root / "2-prune/checkpoints/last.ckpt",
        "averaged": teacher,
        "gated student": root / "2-prune/student.ckpt",
        "pruned": pruned,
        "distilled": distilled,
        "fine-tuned": final,
        "trained embedding": root / "embedding.ckpt",
        "pipeline segmentation": pipeline / "segmentation/pytorch_model.bin",
        "pipeline embedding": pipeline / "embedding/pytorch_model.bin",
        "imported DiariZen segmentation": imported / "segmentation/pytorch_model.bin",
        "WeSpeaker embedding": imported / "embedding/pytorch_model.bin",
        "release 0.1.0 pruned Large": DATA / "old-format-large-pruned.ckpt",
    }


def test_the_allowed_classes_are_exactly_those_the_project_s_checkpoints_need(
        written, monkeypatch):
    """Enough: every kind loads (next test); no more: without any one of them, some kind of
    checkpoint does not load."""
    from pyannote_wavlm_prune.models import loading

    allowed = checkpoint_globals()
    assert len(allowed) == 7
    for left_out in allowed:
        monkeypatch.setattr(loading, "checkpoint_globals",
                            lambda left_out=left_out: [g for g in allowed if g is not left_out])
        refused = []
        for kind, path in written.items():
            try:
                read_checkpoint(path, kind)
            except ValueError:
                refused.append(kind)
        assert refused, f"{left_out} is needed by none"
    # and what the checkpoints name, a static read says: nothing beyond them
    with torch.serialization.safe_globals(allowed):
        named = {kind: torch.serialization.get_unsafe_globals_in_checkpoint(path)
                 for kind, path in written.items()}
    assert all(not found for found in named.values()), named


def test_every_kind_of_checkpoint_the_project_writes_loads_without_trust(written):
    for kind, path in written.items():
        content = read_checkpoint(path, kind)
        assert "state_dict" in content, kind
        if kind.startswith("resumable"):
            continue  # a training state, resumed by its stage (test_recipe's kill test)
        model = load_model(path, kind, strict=False)
        assert isinstance(model, Model), kind


def test_pipeline_directories_the_project_writes_load_without_trust(written):
    for kind in ("pipeline segmentation", "imported DiariZen segmentation"):
        directory = written[kind].parent.parent
        assert Pipeline.from_pretrained(directory).instantiated, kind
        assert load_pipeline(directory).instantiated, kind


def test_diarize_refuses_a_pipeline_directory_whose_checkpoint_runs_code(
        pipeline_directory, tmp_path, capsys):
    from pyannote.audio.sample import SAMPLE_FILE

    marker = tmp_path / "marker"
    directory = hostile_pipeline(pipeline_directory, tmp_path / "pipeline", marker)
    argv = ["diarize", str(directory), str(SAMPLE_FILE["audio"]), "--output", str(tmp_path / "rttm"),
            "--no-progress"]
    assert main(argv) == 2
    error = one_line_error(capsys)
    assert str(directory / "segmentation" / "pytorch_model.bin") in error and "os.makedirs" in error
    assert not marker.exists()
