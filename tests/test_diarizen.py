"""Importing DiariZen's published models: exact conversion, pipelines, training, errors."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch
import yaml
from diarizen_helpers import (
    TINY_BACKEND,
    TINY_PRUNED,
    TINY_UNPRUNED,
    diarizen_state_dict,
    reference_forward,
    resolve,
    write_hub,
)
from helpers import (
    assert_same_diarization,
    network_depth,
    pyannote_s_own,
    random_wespeaker,
    rounding_bound,
    tiny_model,
)
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications

from pyannote_wavlm_prune import attach_gates, import_diarizen, prune, save_checkpoint
from pyannote_wavlm_prune.frontends import UNITS, expected_params
from pyannote_wavlm_prune.frontends.published import (
    PUBLISHED_STRUCTURES,
    REFERENCE_BASE_PLUS_S80,
    published_structure,
)
from pyannote_wavlm_prune.importers.diarizen import diarizen_model


def waveforms(num_samples: int = 40000, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, samples) noise bursts, not a whole number of frames (2.5 s)."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, num_samples, generator=generator)


def probabilities(model, waves: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(waves[:, None]).exp()


def assert_equal_in_float64(model, expected: torch.Tensor, waves: torch.Tensor) -> None:
    """`model`, converted to float64, gives `expected` (float64) on `waves`: the same real
    arithmetic computed two ways, so equal up to float64 rounding."""
    actual = probabilities(model.double(), waves.double())
    assert (actual - expected).abs().max().item() <= rounding_bound(expected, network_depth(model))


def total(state) -> int:
    return sum(tensor.numel() for tensor in state.values())


def tree_digest(directory: Path) -> dict[str, str]:
    """Content hash of every file under `directory` (to check it is left untouched)."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def model_args(wavlm, backend=None) -> dict:
    config, _ = resolve(wavlm)
    backend = backend or {"dim": 256, "ffn": 1024, "heads": 4, "blocks": 4, "kernel": 31}
    return {"wavlm_src": wavlm if isinstance(wavlm, str) else "custom_wavlm",
            "wavlm_layer_num": config.num_hidden_layers + 1, "wavlm_feat_dim": config.hidden_size,
            "attention_in": backend["dim"], "ffn_hidden": backend["ffn"],
            "num_head": backend["heads"], "num_layer": backend["blocks"],
            "kernel_size": backend["kernel"], "chunk_size": 8, "max_speakers_per_chunk": 4}


@pytest.fixture(scope="module")
def wespeaker(tmp_path_factory) -> Path:
    """A local WeSpeaker ResNet34 (DiariZen's embedding architecture), random weights."""
    return save_checkpoint(random_wespeaker(), tmp_path_factory.mktemp("wespeaker") / "pytorch_model.bin")


@pytest.fixture(scope="module")
def base_hub(tmp_path_factory):
    """A DiariZen hub directory of the released Base+ s80 structure, random weights."""
    directory = tmp_path_factory.mktemp("hub") / "diarizen-wavlm-base-s80-md"
    state = write_hub(directory, "wavlm_base_s80_md", seed=1)
    return directory, state


@pytest.fixture(scope="module")
def imported_base(base_hub, wespeaker, tmp_path_factory):
    directory, _ = base_hub
    before = tree_digest(directory)
    output = import_diarizen(directory, tmp_path_factory.mktemp("pipelines") / "base-s80",
                             embedding=wespeaker)
    assert tree_digest(directory) == before  # the input is only read
    return output


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_hub") / "diarizen-tiny"
    state = write_hub(directory, TINY_PRUNED, seed=2, backend=TINY_BACKEND)
    return directory, state


# ---------------------------------------------------------------------------- exactness


def test_imported_base_plus_s80_computes_what_diarizen_computes(base_hub, imported_base):
    _, state = base_hub
    model = Model.from_pretrained(imported_base / "segmentation" / "pytorch_model.bin")
    waves = waveforms()
    expected = reference_forward(state, "wavlm_base_s80_md", waves)
    assert expected.std() > 0.01  # random weights, but not a saturated output
    assert_equal_in_float64(model, expected, waves)
    # every DiariZen tensor is used, but gru_rel_pos_const of the removed heads
    config, structure = resolve("wavlm_base_s80_md")
    unused_constants = sum(config.num_attention_heads - len(heads)
                           for heads, present in zip(structure.kept_heads,
                                                     structure.attention_layers, strict=True)
                           if present)
    assert total(model.state_dict()) == total(state) - unused_constants


def test_imported_large_s80_computes_what_diarizen_computes():
    state = diarizen_state_dict("wavlm_large_s80_md", seed=3)
    model = diarizen_model(state, model_args("wavlm_large_s80_md"))
    waves = waveforms(batch=1)
    expected = reference_forward(state, "wavlm_large_s80_md", waves)
    assert expected.std() > 0.01
    assert_equal_in_float64(model, expected, waves)
    # unused by DiariZen itself: the encoder's final norm, the norms of the 4 removed
    # pre-LN attention blocks, gru_rel_pos_const of removed heads
    config, structure = resolve("wavlm_large_s80_md")
    assert [i for i, present in enumerate(structure.attention_layers) if not present] == [
        9, 12, 16, 17]
    unused_constants = sum(16 - len(heads) for heads, present in
                           zip(structure.kept_heads, structure.attention_layers, strict=True)
                           if present)
    assert total(model.state_dict()) == total(state) - 2 * 1024 - 4 * 2 * 1024 - unused_constants


def test_imported_unpruned_base_keeps_stock_modules_and_computes_what_diarizen_computes():
    state = diarizen_state_dict(TINY_UNPRUNED, seed=4, backend=TINY_BACKEND)
    model = diarizen_model(state, model_args(TINY_UNPRUNED, TINY_BACKEND), structure=TINY_UNPRUNED)
    assert model.structure is None  # stock transformers modules: gates can attach
    waves = waveforms()
    expected = reference_forward(state, TINY_UNPRUNED, waves, backend=TINY_BACKEND)
    assert_equal_in_float64(model, expected, waves)


def test_import_options_are_saved_and_reload_in_a_fresh_process(imported_base, tmp_path):
    checkpoint = imported_base / "segmentation" / "pytorch_model.bin"
    # float64 in both processes, so that rounding cannot hide a real difference
    waves = waveforms(batch=1).double()
    torch.save(waves, tmp_path / "waves.pt")
    script = (
        "import sys, json, torch\n"
        "import pyannote_wavlm_prune\n"
        "from pyannote.audio import Model\n"
        f"model = Model.from_pretrained({str(checkpoint)!r}).eval().double()\n"
        f"waves = torch.load({str(tmp_path / 'waves.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save(model(waves[:, None]).exp(), {str(tmp_path / 'out.pt')!r})\n"
        "print(json.dumps(model.numerics))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert options == {"layer_weighting": "linear", "conv_output_scale": True,
                       "pruned_norms": "kept", "waveform_norm_eps": 1e-5}
    model = Model.from_pretrained(checkpoint).double()
    here = probabilities(model, waves)
    # another process, maybe another thread count (summation order): equal up to rounding
    difference = (torch.load(tmp_path / "out.pt") - here).abs().max().item()
    assert difference <= rounding_bound(here, network_depth(model))


def test_default_options_leave_models_and_old_checkpoints_unchanged(tmp_path):
    model = tiny_model()
    assert "frontend.conv_output_scale" not in model.state_dict()
    assert model.hparams.variant == "default"
    assert (model.numerics["layer_weighting"], model.numerics["pruned_norms"]) == (
        "softmax", "original")
    path = save_checkpoint(model, tmp_path / "model.ckpt")
    # a checkpoint written before variants (and their numerics) existed
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["hyper_parameters"]["variant"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = Model.from_pretrained(tmp_path / "old.ckpt")
    waves = waveforms(16000, batch=1)
    # same weights, same process, same arithmetic: exact
    assert torch.equal(probabilities(old, waves), probabilities(model, waves))


# ---------------------------------------------------------------------------- pipeline


def test_imported_directory_carries_diarizen_s_pipeline_settings(imported_base):
    assert sorted(path.name for path in imported_base.iterdir()) == [
        "config.yaml", "embedding", "plda", "segmentation"]
    config = yaml.safe_load((imported_base / "config.yaml").read_text())
    assert config["params"]["clustering"] == {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
    pipeline = config["pipeline"]["params"]
    assert pipeline["clustering"] == "VBxClustering" and pipeline["plda"] == "$model/plda"
    assert pipeline["segmentation_step"] == 0.1 and pipeline["embedding_exclude_overlap"] is True
    assert pipeline["segmentation_batch_size"] == pipeline["embedding_batch_size"] == 32
    assert config["diarizen"] == {
        "source": config["diarizen"]["source"], "wavlm_src": "wavlm_base_s80_md",
        "pipeline": "diarizen", "window": 16.0,
        "min_speakers": 1, "max_speakers": 20, "apply_median_filtering": True,
        "ahc_criterion": "distance", "lda_dim": 128, "max_iters": 20}
    model = Model.from_pretrained(imported_base / "segmentation" / "pytorch_model.bin")
    assert model.specifications.duration == 16.0  # the pipeline's window: DiariZen's seg_duration


def test_pipeline_from_pretrained_diarizes_the_sample_file(wespeaker, tmp_path):
    from pyannote.audio import Pipeline
    from pyannote.audio.sample import SAMPLE_FILE

    # a small WavLM and an 8 s window, 1 s step: the embedding dominates on a CPU; pyannote
    # 4's pipeline (DiariZen's is compared with DiariZen's own in test_diarizen_pipeline.py)
    hub = tmp_path / "hub"
    write_hub(hub, TINY_PRUNED, seed=6, backend=TINY_BACKEND, seg_duration=8,
              segmentation_step=1.0)
    output = import_diarizen(hub, tmp_path / "pipeline", embedding=wespeaker,
                             structure=TINY_PRUNED, pipeline="pyannote")
    pipeline = Pipeline.from_pretrained(output)
    assert pipeline._segmentation.model.specifications.duration == 8.0
    assert pipeline.klustering == "VBxClustering" and pipeline.clustering.threshold == 0.6
    file = {"waveform": SAMPLE_FILE["waveform"], "sample_rate": SAMPLE_FILE["sample_rate"],
            "uri": "sample"}
    result = pipeline(file)
    assert pipeline.embedding_path == "per-chunk"
    # pyannote's output, cropped at the file's end: its last chunk (24 to 32 s) is zero-padded
    assert_same_diarization(result, pyannote_s_own(pipeline)(file), duration=30.0)
    diarization, exclusive = result.speaker_diarization, result.exclusive_speaker_diarization
    assert exclusive.get_overlap().duration() == 0.0
    # exclusive: at most one speaker at a time, covering what the full one covers
    assert exclusive.get_timeline().support().duration() == pytest.approx(
        diarization.get_timeline().support().duration(), abs=0.1)
    # one 256-dimensional WeSpeaker embedding per speaker found
    assert result.speaker_embeddings.shape == (len(diarization.labels()), 256)


def test_import_without_embedding_names_diarizen_s_wespeaker(base_hub, tmp_path):
    directory, _ = base_hub
    output = import_diarizen(directory, tmp_path / "pipeline")
    config = yaml.safe_load((output / "config.yaml").read_text())
    assert config["pipeline"]["params"]["embedding"] == "pyannote/wespeaker-voxceleb-resnet34-LM"
    assert not (output / "embedding").exists()


def test_command_line_imports_with_a_structure_file(tiny_hub, wespeaker, tmp_path, capsys):
    from pyannote_wavlm_prune.cli import main

    directory, state = tiny_hub
    structure_file = tmp_path / "structure.yaml"
    structure_file.write_text(yaml.safe_dump(TINY_PRUNED))
    output = tmp_path / "tiny-pipeline"
    assert main(["import-diarizen", str(directory), "--output", str(output), "--embedding",
                 str(wespeaker), "--structure", str(structure_file)]) == 0
    assert f"pipeline written to {output}" in capsys.readouterr().out
    model = Model.from_pretrained(output / "segmentation" / "pytorch_model.bin")
    assert model.structure.kept_heads == ((1, 3), (0, 2, 3), (), (2,))
    waves = waveforms()
    expected = reference_forward(state, TINY_PRUNED, waves, backend=TINY_BACKEND)
    assert_equal_in_float64(model, expected, waves)


# ---------------------------------------------------------------------------- errors


def _copy_hub(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for path in source.rglob("*"):
        if path.is_file():
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return destination


def _without_model_args(hub: Path) -> None:
    text = (hub / "config.toml").read_text()
    start, end = text.index("[model]"), text.index("[inference.args]")
    (hub / "config.toml").write_text(text[:start] + text[end:])


def _replace_in_config(old: str, new: str):
    def change(hub: Path) -> None:
        text = (hub / "config.toml").read_text()
        assert old in text
        (hub / "config.toml").write_text(text.replace(old, new))
    return change


def _edit_state(edit):
    def change(hub: Path) -> None:
        state = torch.load(hub / "pytorch_model.bin", weights_only=True)
        edit(state)
        torch.save(state, hub / "pytorch_model.bin")
    return change


def _replace_checkpoint(obj):
    def change(hub: Path) -> None:
        torch.save(obj, hub / "pytorch_model.bin")
    return change


NARROWER_FFN = {**TINY_PRUNED, "ffn_widths": [41, 100, 8, 64]}

BAD_INPUTS = {
    "missing checkpoint": (lambda hub: (hub / "pytorch_model.bin").unlink(), TINY_PRUNED,
                           FileNotFoundError, r"pytorch_model.bin does not exist"),
    "no [model.args]": (_without_model_args, TINY_PRUNED, ValueError,
                        r"has no \[model.args\] table"),
    "unknown structure": (_replace_in_config('"custom_wavlm"', '"wavlm_huge_s95"'), None,
                          ValueError, r"Unknown WavLM structure 'wavlm_huge_s95'.*structure="),
    "positional encoding": (_replace_in_config("use_posi = false", "use_posi = true"),
                            TINY_PRUNED, ValueError, r"use_posi = true"),
    "unused tensor": (_edit_state(lambda s: s.update({"conformer.pos_emb.pe_k.weight":
                                                      torch.zeros(2000, 16)})),
                      TINY_PRUNED, ValueError,
                      r"1 tensors that the import would leave unused: \['conformer.pos_emb"),
    "missing tensor": (_edit_state(lambda s: s.pop(
        "wavlm_model.encoder.transformer.layers.3.attention.q_proj.weight")), TINY_PRUNED,
        ValueError, r"lacks 1 tensors .*layers.3.attention.q_proj.weight"),
    "shape against structure": (lambda hub: None, NARROWER_FFN, ValueError,
                                r"shape disagrees .*layers.0.feed_forward.intermediate_dense"
                                r".weight \(40, 64\) \(expected \(41, 64\)\)"),
    "not a state dict": (_replace_checkpoint([1, 2, 3]), TINY_PRUNED, ValueError,
                         r"holds a list, not a state dict"),
    "arbitrary pickle": (_replace_checkpoint(Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=1.0)),
        TINY_PRUNED, ValueError, r"holds a Specifications, not a state dict"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_anything_is_written(case, tiny_hub, tmp_path):
    change, structure, error, message = BAD_INPUTS[case]
    hub = _copy_hub(tiny_hub[0], tmp_path / "hub")
    change(hub)
    before = tree_digest(hub)
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(error, match=message):
        import_diarizen(hub, destination / "pipeline", structure=structure)
    assert list(destination.iterdir()) == []  # no pipeline, no staging directory
    assert tree_digest(hub) == before


def test_an_existing_output_is_refused(tiny_hub, tmp_path):
    (tmp_path / "pipeline").mkdir()
    with pytest.raises(FileExistsError, match=r"pipeline exists: expected the path of a new"):
        import_diarizen(tiny_hub[0], tmp_path / "pipeline", structure=TINY_PRUNED)
    assert list((tmp_path / "pipeline").iterdir()) == []


def test_a_hub_name_outside_the_cache_is_a_clear_error_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        import_diarizen("BUT-FIT/diarizen-wavlm-base-s80-md", tmp_path / "pipeline")
    assert not (tmp_path / "pipeline").exists()


# ---------------------------------------------------------------------------- structures


def test_published_structures_have_diarizen_s_head_indices_and_removed_blocks():
    assert set(PUBLISHED_STRUCTURES) == {"wavlm_base", "wavlm_base_plus", "wavlm_large",
                                         "wavlm_base_s80_md", "wavlm_large_s80_md"}
    config, base = published_structure("wavlm_base_s80_md")
    assert base.kept_heads[0] == (1, 6) and base.kept_heads == REFERENCE_BASE_PLUS_S80.kept_heads
    assert base.attention_layers == (True,) * 8 + (False, False, True, True)
    # the published structure drops the two removed blocks' output biases
    assert REFERENCE_BASE_PLUS_S80.params() - base.params() == 1536
    large_config, large = published_structure("wavlm_large_s80_md")
    assert large_config.conv_bias is False and large.conv_channels[0] == 512
    assert [len(heads) for heads in large.kept_heads][:4] == [5, 3, 6, 6]
    assert sum(large.ffn_widths) == 14441


@pytest.mark.parametrize("name", ["wavlm_base_s80_md", "wavlm_large_s80_md"])
def test_cost_model_counts_the_parameters_of_an_imported_front_end(name):
    from pyannote_wavlm_prune.frontends import WavLMFrontEnd

    config, structure = published_structure(name)
    frontend = WavLMFrontEnd(config, structure=structure, conv_output_scale=True,
                             pruned_norms="kept")
    parameters = sum(p.numel() for p in frontend.parameters())
    assert expected_params(frontend) == parameters
    # plain norms: no vector for the pruned channels of the last CNN layer (E parameters)
    assert structure.params() - parameters == config.hidden_size
    assert parameters == {"wavlm_base_s80_md": 18_881_453, "wavlm_large_s80_md": 63_084_849}[name]


# ---------------------------------------------------------------------------- training


def test_imported_model_finetunes_with_pyannote_s_task(tiny_hub, tiny_protocol, tmp_path):
    from test_training import assert_40_steps_cut_the_loss_by_a_fifth

    from pyannote_wavlm_prune.recipe.training import diarization_task

    directory, _ = tiny_hub
    output = import_diarizen(directory, tmp_path / "pipeline", structure=TINY_PRUNED)
    model = Model.from_pretrained(output / "segmentation" / "pytorch_model.bin")
    lightning.seed_everything(0)
    task = diarization_task(tiny_protocol, duration=2.0, batch_size=8, cache_dir=tmp_path)
    model.task = task
    assert_40_steps_cut_the_loss_by_a_fifth(model, task, tmp_path)
    assert model.hparams.variant == "diarizen" and model.structure.kept_heads[0] == (1, 3)


def test_imported_unpruned_model_is_pruned_by_distill_prune(tiny_protocol, tmp_path):
    from pyannote_wavlm_prune.recipe.callbacks import StopAtTargetSparsity
    from pyannote_wavlm_prune.recipe.training import trainer
    from pyannote_wavlm_prune.tasks import DistillPrune

    state = diarizen_state_dict(TINY_UNPRUNED, seed=5, backend=TINY_BACKEND)
    teacher = diarizen_model(state, model_args(TINY_UNPRUNED, TINY_BACKEND),
                             structure=TINY_UNPRUNED, duration=0.5)
    lightning.seed_everything(0)
    task = DistillPrune(tiny_protocol, teacher=teacher, sparsity=0.3, warmup_steps=10,
                        batch_size=2, cache=tmp_path / "cache.npz", validate=False,
                        learning_rate={"student": 2e-3, "gates": 0.3, "lagrangian": 0.05})
    student = task.student()
    stop = StopAtTargetSparsity(tolerance=0.02, patience=1, measure="pruned")
    trainer(max_steps=500, progress=False, callbacks=[stop]).fit(student)
    assert student.global_step < 500
    student.eval().double()  # pruned in float64, to compare the two in float64
    pruned = prune(student)
    sparsity = pruned.structure.sparsity()
    assert sparsity >= 0.28
    # DiariZen's options survive pruning; its last-CNN scale is folded, so outputs agree
    assert pruned.numerics["layer_weighting"] == "linear" and pruned.numerics["conv_output_scale"]
    assert pruned.numerics["pruned_norms"] == "kept"  # pruning keeps the model's norm semantics
    waves = waveforms()
    assert_equal_in_float64(pruned, probabilities(student, waves.double()), waves)


def test_an_imported_pruned_model_is_gated_and_pruned_further_exactly(tiny_hub):
    state = tiny_hub[1]
    model = diarizen_model(state, model_args(TINY_PRUNED, TINY_BACKEND), structure=TINY_PRUNED)
    # float64, pruning included: the pruned model computes what the gated one computes
    gated = attach_gates(copy.deepcopy(model), units=UNITS).double()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in gated.frontend.named_parameters():
            if name.endswith("log_alpha"):  # about half the units closed, the others soft
                parameter.copy_(3.0 * torch.randn(parameter.shape, generator=generator))
    pruned = prune(gated.eval())
    waves = waveforms()
    # DiariZen's options survive: plain norms over the kept channels, the last-CNN scale
    assert (pruned.numerics["pruned_norms"], pruned.numerics["conv_output_scale"]) == ("kept", True)
    assert_equal_in_float64(pruned, probabilities(gated, waves.double()), waves)
    before, after = model.structure, pruned.structure
    assert all(set(a) <= set(b) for a, b in zip(after.kept_heads, before.kept_heads, strict=True))
    assert all(a < b for a, b in zip(after.conv_channels, before.conv_channels, strict=True))
    assert after.attention_layers[2] is False  # removed by DiariZen, stays removed
    parameters = sum(p.numel() for p in pruned.frontend.parameters())
    assert parameters == expected_params(pruned.frontend) == after.params() - 64  # no E vector
    assert after.sparsity() > before.sparsity()


def test_an_imported_pruned_model_prunes_further_with_distill_prune_then_finetunes(
        tiny_hub, tiny_protocol, tmp_path):
    from pyannote_wavlm_prune.recipe import Budget, finetune_stage
    from pyannote_wavlm_prune.recipe.callbacks import StopAtTargetSparsity
    from pyannote_wavlm_prune.recipe.training import trainer
    from pyannote_wavlm_prune.tasks import DistillPrune

    directory, _ = tiny_hub
    output = import_diarizen(directory, tmp_path / "pipeline", structure=TINY_PRUNED)
    teacher = output / "segmentation" / "pytorch_model.bin"
    already = Model.from_pretrained(teacher).structure.sparsity()
    assert 0.52 < already < 0.53
    lightning.seed_everything(0)
    # s53 -> s70: the target counts from the unpruned architecture
    task = DistillPrune(tiny_protocol, teacher=teacher, sparsity=0.7, warmup_steps=10,
                        duration=0.5, batch_size=2, cache=tmp_path / "cache.npz",
                        validate=False,
                        learning_rate={"student": 2e-3, "gates": 0.3, "lagrangian": 0.05})
    student = task.student()
    stop = StopAtTargetSparsity(tolerance=0.02, patience=1, measure="pruned")
    trainer(max_steps=300, progress=False, callbacks=[stop]).fit(student)
    assert student.global_step < 300
    pruned = prune(student.eval(), sparsity=0.7)
    assert abs(pruned.structure.sparsity() - 0.7) <= 0.005
    assert all(set(a) <= set(b) for a, b in zip(pruned.structure.kept_heads,
                                                TINY_PRUNED["kept_heads"], strict=True))

    budget = Budget(max_epochs=1, limit_train_batches=3, limit_val_batches=2, batch_size=4,
                    duration=2.0, k=1, trainer={"accelerator": "cpu"})
    finetuned = finetune_stage(tiny_protocol, tmp_path / "finetune", pruned, budget=budget,
                               fresh_back_end=False, progress=False)
    reloaded = Model.from_pretrained(finetuned)
    assert reloaded.structure == pruned.structure
    assert (reloaded.numerics["pruned_norms"], reloaded.numerics["layer_weighting"]) == (
        "kept", "linear")
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in pruned.parameters())
    # it trained: WavLM's weights moved
    moved = (reloaded.frontend.wavlm.feature_projection.projection.weight
             - pruned.frontend.wavlm.feature_projection.projection.weight).abs().max()
    assert moved > 1e-6
