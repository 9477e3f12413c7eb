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
from helpers import (
    FAST_PIPELINE,
    TINY_BACKEND,
    TINY_PRUNED_STRUCTURE,
    lay_out_hub_cache,
    random_wespeaker,
    save_as_pyannote_3_1,
    tiny_model,
)
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
    from pyannote_wavlm_prune.frontends.presets import tiny_config
    from pyannote_wavlm_prune.pipelines.embedding_training import train_embedding
    from pyannote_wavlm_prune.recipe import (
        Budget,
        distill_stage,
        finetune_stage,
        prune_stage,
        train_stage,
    )

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


def test_the_allowed_classes_are_exactly_those_the_checkpoints_of_every_writer_need(
        written, others_wrote, monkeypatch):
    """Enough: every kind loads (the tests below); no more: without any one of them, some kind
    of checkpoint (the project's or another writer's) does not load."""
    from pyannote_wavlm_prune.models import loading

    every = {**written, **others_wrote}
    allowed = checkpoint_globals()
    assert len(allowed) == 8
    for left_out in allowed:
        monkeypatch.setattr(loading, "checkpoint_globals",
                            lambda left_out=left_out: [g for g in allowed if g is not left_out])
        refused = []
        for kind, path in every.items():
            try:
                read_checkpoint(path, kind)
            except ValueError:
                refused.append(kind)
        assert refused, f"{left_out} is needed by none"
    # and what the checkpoints name, a static read says: nothing beyond them
    with torch.serialization.safe_globals(allowed):
        named = {kind: torch.serialization.get_unsafe_globals_in_checkpoint(path)
                 for kind, path in every.items()}
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


# ------------------------------------- what pyannote and Lightning write loads without trust

SEGMENTATION_3_0 = DATA / "pyannote-segmentation-3.0" / "pytorch_model.bin"
TASK_GLOBALS = {f"pyannote.audio.core.task.{name}"
                for name in ("Problem", "Resolution", "Specifications")}
# pyannote 3.x wrote torch.__version__ (a TorchVersion) in the "pyannote.audio" block
PYANNOTE_3_GLOBALS = TASK_GLOBALS | {"torch.torch_version.TorchVersion"}
HUB_SEGMENTATION = "pyannote/segmentation-3.0 (the hub's file, pyannote 3.0)"
HUB_WESPEAKER = "WeSpeaker ResNet34 (the hub's format, pyannote 3.1)"
TRAINED_PYANNET = "PyanNet trained by pyannote 4 (a Trainer's epoch checkpoint)"
RESUMABLE_PYANNET = "PyanNet trained by pyannote 4 (a Trainer's last.ckpt)"


@pytest.fixture(scope="module")
def others_wrote(tiny_protocol, tmp_path_factory) -> dict[str, Path]:
    """One checkpoint of every writer outside the project: {kind: path}."""
    import lightning
    from lightning.pytorch.callbacks import ModelCheckpoint
    from pyannote.audio.models.segmentation import PyanNet
    from pyannote.audio.tasks import SpeakerDiarization as SpeakerDiarizationTask

    root = tmp_path_factory.mktemp("others")
    wespeaker = save_as_pyannote_3_1(random_wespeaker(), root / "wespeaker" / "pytorch_model.bin")
    # pyannote 4's own task and model, trained one step by Lightning's Trainer
    task = SpeakerDiarizationTask(tiny_protocol, duration=2.0, batch_size=4,
                                  max_speakers_per_chunk=3, max_speakers_per_frame=2)
    model = PyanNet(sincnet={"stride": 10}, lstm={"hidden_size": 16, "num_layers": 1},
                    linear={"hidden_size": 16, "num_layers": 1}, task=task)
    trainer = lightning.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
        default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "trained", save_last=True)])
    trainer.fit(model)
    return {HUB_SEGMENTATION: SEGMENTATION_3_0, HUB_WESPEAKER: wespeaker,
            TRAINED_PYANNET: root / "trained" / "epoch=0-step=1.ckpt",
            RESUMABLE_PYANNET: root / "trained" / "last.ckpt"}


def test_the_globals_that_pyannote_s_checkpoints_hold(others_wrote):
    expected = {HUB_SEGMENTATION: PYANNOTE_3_GLOBALS, HUB_WESPEAKER: PYANNOTE_3_GLOBALS,
                TRAINED_PYANNET: TASK_GLOBALS, RESUMABLE_PYANNET: TASK_GLOBALS}
    for kind, path in others_wrote.items():
        assert set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) == expected[kind]


def test_the_tests_pyannote_3_1_writer_writes_what_the_hub_s_file_holds(tmp_path):
    real = torch.load(SEGMENTATION_3_0, weights_only=False)
    rewritten = torch.load(save_as_pyannote_3_1(Model.from_pretrained(SEGMENTATION_3_0),
                                                tmp_path / "pytorch_model.bin"),
                           weights_only=False)
    assert list(rewritten) == list(real)
    block, real_block = rewritten["pyannote.audio"], real["pyannote.audio"]
    assert list(block) == list(real_block) and list(block["versions"]) == ["torch", "pyannote.audio"]
    assert type(block["versions"]["torch"]) is type(real_block["versions"]["torch"])
    assert block["architecture"] == real_block["architecture"]
    assert block["specifications"] == real_block["specifications"]
    assert rewritten["hyper_parameters"] == real["hyper_parameters"]
    assert set(torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "pytorch_model.bin")
               ) == PYANNOTE_3_GLOBALS


def test_pyannote_s_checkpoints_load_untrusted_and_compute_what_pyannote_s_loader_gives(
        others_wrote):
    waveforms = torch.randn(2, 1, 32000, generator=torch.Generator().manual_seed(0))
    for kind, path in others_wrote.items():
        ours = load_model(path, kind).eval()
        theirs = Model.from_pretrained(path).eval()  # pickle's full power
        assert type(ours) is type(theirs), kind
        with torch.inference_mode():
            # the same weights through the same operations in one process: equal to the bit
            assert torch.equal(ours(waveforms), theirs(waveforms)), kind


def test_a_pipeline_of_pyannote_s_segmentation_and_a_pyannote_3_1_wespeaker_exports_and_loads(
        others_wrote, tmp_path, capsys):
    from pyannote.audio.models.segmentation import PyanNet

    output = tmp_path / "pipeline"
    assert main(["export", "--segmentation", str(SEGMENTATION_3_0), "--embedding",
                 str(others_wrote[HUB_WESPEAKER]), "--clustering", "AgglomerativeClustering",
                 "--output", str(output)]) == 0
    capsys.readouterr()
    for pipeline in (Pipeline.from_pretrained(output), load_pipeline(output)):
        assert pipeline.instantiated
        assert isinstance(pipeline._segmentation.model, PyanNet)
        assert type(pipeline._embedding.model_).__name__ == "WeSpeakerResNet34"


def test_import_diarizen_takes_a_wespeaker_checkpoint_as_pyannote_3_1_wrote_it(
        others_wrote, tmp_path, capsys):
    hub, structure = tmp_path / "hub", tmp_path / "structure.yaml"
    write_hub(hub, TINY_PRUNED, seed=2, backend=DIARIZEN_BACKEND)
    structure.write_text(yaml.safe_dump(TINY_PRUNED))
    output = tmp_path / "pipeline"
    assert main(["import-diarizen", str(hub), "--output", str(output), "--embedding",
                 str(others_wrote[HUB_WESPEAKER]), "--structure", str(structure)]) == 0
    assert f"pipeline written to {output}" in capsys.readouterr().out
    written_state = load_model(output / "embedding" / "pytorch_model.bin").state_dict()
    given_state = torch.load(others_wrote[HUB_WESPEAKER], weights_only=False)["state_dict"]
    assert written_state.keys() == given_state.keys()
    assert all(torch.equal(written_state[key], given_state[key]) for key in given_state)


def test_a_hub_embedding_name_loads_pyannote_3_1_s_file_from_the_hub_cache_untrusted(
        others_wrote, segmentation, tmp_path, monkeypatch):
    import huggingface_hub

    name = "pyannote/wespeaker-voxceleb-resnet34-LM"
    cache = tmp_path / "hub-cache"
    lay_out_hub_cache(cache, name, {"pytorch_model.bin": others_wrote[HUB_WESPEAKER]})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    output = export_pipeline(tmp_path / "pipeline", segmentation, embedding_name=name,
                             clustering="AgglomerativeClustering", **FAST_PIPELINE)
    assert yaml.safe_load((output / "config.yaml").read_text())["pipeline"]["params"][
        "embedding"] == name
    pipeline = load_pipeline(output)
    given_state = torch.load(others_wrote[HUB_WESPEAKER], weights_only=False)["state_dict"]
    loaded_state = pipeline._embedding.model_.state_dict()
    assert all(torch.equal(loaded_state[key], given_state[key]) for key in given_state)


def test_import_diarizen_s_default_embedding_loads_from_the_hub_cache_untrusted(
        others_wrote, tmp_path, monkeypatch):
    """The flagship flow as a user has it: DiariZen's model imported with its default
    embedding, pyannote's WeSpeaker hub file (in the format pyannote 3.1 wrote) from the cache."""
    import huggingface_hub

    from pyannote_wavlm_prune import import_diarizen

    cache = tmp_path / "hub-cache"
    lay_out_hub_cache(cache, "pyannote/wespeaker-voxceleb-resnet34-LM",
                      {"pytorch_model.bin": others_wrote[HUB_WESPEAKER]})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    hub = tmp_path / "diarizen"
    write_hub(hub, TINY_PRUNED, seed=2, backend=DIARIZEN_BACKEND)
    output = import_diarizen(hub, tmp_path / "pipeline", structure=TINY_PRUNED)
    pipeline = Pipeline.from_pretrained(output)
    given_state = torch.load(others_wrote[HUB_WESPEAKER], weights_only=False)["state_dict"]
    loaded_state = pipeline._embedding.model_.state_dict()
    assert all(torch.equal(loaded_state[key], given_state[key]) for key in given_state)
