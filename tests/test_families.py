"""HuBERT and wav2vec 2.0 front ends, Base and Large layouts, through the whole flow.

What every layout shares with WavLM's (hidden states against transformers, the cost model
against torch's flop counter and the parameter count, gated-then-pruned against gated in
float64, pruning a pruned front end again) is in the tests parametrised over
`wavlm_helpers.LAYOUTS`; here: pretrained weights, DistillPrune to a budget, the pyannote
model's flow (distill, fine-tune, bench), ONNX and int8, pipelines.
"""

from __future__ import annotations

import lightning
import pytest
import torch
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_BACKEND, powerset_specifications, tiny_model
from pyannote.audio import Model, Pipeline
from pyannote.audio.sample import SAMPLE_FILE
from wavlm_helpers import count_parameters, flop_counter_macs, layout_config

from pyannote_wavlm_prune import WavLMSegmentation, prune, save_checkpoint
from pyannote_wavlm_prune.deploy import export_onnx, quantize_int8
from pyannote_wavlm_prune.frontends.architectures import ARCHITECTURES
from pyannote_wavlm_prune.frontends.cost import expected_macs
from pyannote_wavlm_prune.pipelines import export_pipeline
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.segmentation_bench import bench_segmentation
from pyannote_wavlm_prune.recipe import distill_stage, finetune_stage
from pyannote_wavlm_prune.recipe.stages import Budget
from pyannote_wavlm_prune.recipe.training import trainer
from pyannote_wavlm_prune.tasks import DistillPrune

# WavLM's Base layout goes through these in tests/test_budget.py, test_deploy.py, test_export.py
LAYOUTS_HERE = ["large", "hubert-base", "hubert-large", "wav2vec2-base", "wav2vec2-large"]
# one layout of each new family through the training stages and int8
FLOW_LAYOUTS = ["hubert-base", "wav2vec2-large"]
ONE_STEP = Budget(max_epochs=1, limit_train_batches=1, limit_val_batches=1, batch_size=2,
                  duration=0.5, k=1, trainer={"accelerator": "cpu"})
AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}
# the int8 tolerance of tests/test_deploy.py (max |p_int8 - p_fp32| on random tiny models)
INT8_TOLERANCE = 0.1


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
@pytest.mark.parametrize("layout", ["base", "large"])
def test_pretrained_weights_load_exactly_from_a_save_pretrained_directory(family, layout,
                                                                          tmp_path):
    architecture = ARCHITECTURES[family]
    config = layout_config(f"{family}-{layout}")
    pretrained = architecture.model_class(config)
    pretrained.save_pretrained(tmp_path / family)
    model = WavLMSegmentation(wavlm=str(tmp_path / family), **TINY_BACKEND)
    assert model.hparams.wavlm["model_type"] == family  # the config, not the path
    assert isinstance(model.frontend.wavlm, architecture.model_class)
    loaded = model.frontend.wavlm.state_dict()
    compared = 0
    for name, tensor in pretrained.state_dict().items():
        if name.startswith("encoder.layer_norm.") and config.do_stable_layer_norm:
            continue  # pre-LN final norm: unused by the front end, dropped
        assert torch.equal(loaded[name], tensor), name  # copied, not computed
        compared += 1
    assert compared == len(loaded)


@pytest.fixture(scope="module")
def students(tiny_protocol, tmp_path_factory):
    """One short DistillPrune run (target 0.5 of the parameters) per layout of LAYOUTS_HERE."""
    results = {}
    for layout in LAYOUTS_HERE:
        lightning.seed_everything(0)
        directory = tmp_path_factory.mktemp(f"distill-prune-{layout}")
        teacher = tiny_model(layout, duration=0.5)
        task = DistillPrune(tiny_protocol, teacher=teacher, sparsity=0.5, warmup_steps=20,
                            batch_size=2, validate=False, cache=directory / "cache.npz")
        student = task.student()
        trainer(max_steps=40, progress=False).fit(student)
        results[layout] = teacher, task, student.eval()
    return results


@pytest.fixture(scope="module")
def pruned(students):
    """Each student pruned exactly at its budget (`prune(student, sparsity=0.5)`)."""
    return {layout: prune(student, sparsity=0.5) for layout, (_, _, student) in students.items()}


@pytest.mark.parametrize("layout", LAYOUTS_HERE)
def test_distill_prune_lands_within_half_a_point_of_its_target_after_exact_finalisation(
        students, pruned, layout):
    _, task, student = students[layout]
    reached = pruned[layout].structure.sparsity("params")
    assert abs(reached - 0.5) <= 0.005, reached
    # the gates trained towards it: the deterministic structure is within 3 points already
    assert abs(prune(student).structure.sparsity("params") - 0.5) <= 0.03
    # the pruned front end is physically smaller: its parameters are the structure's count
    frontend = pruned[layout].frontend
    assert count_parameters(frontend) == frontend.structure.params()
    waveform = torch.randn(1, 16000)
    assert flop_counter_macs(frontend, waveform) == expected_macs(frontend, 16000)


@pytest.mark.parametrize("layout", LAYOUTS_HERE)
def test_onnx_graph_of_a_pruned_model_equals_torch(pruned, layout):
    model = pruned[layout]
    report = export_onnx(model)
    # fp32 graph against the torch model, on two batch sizes and lengths: float32 rounding of
    # a different operator order (the export's own check is 1e-3 on log-probabilities)
    assert report.max_abs_diff <= 1e-4, report.max_abs_diff
    assert len(report.checked_shapes) == 2


@pytest.mark.parametrize("layout", LAYOUTS_HERE)
def test_a_pipeline_directory_loads_offline_and_diarizes(pruned, layout, tmp_path):
    model = pruned[layout]
    directory = export_pipeline(tmp_path / "pipeline", model, untrained_embedding(dimension=32),
                                params=AGGLOMERATIVE, **FAST)
    pipeline = Pipeline.from_pretrained(directory)
    loaded = pipeline._segmentation.model
    assert loaded.structure == model.structure
    assert loaded.hparams.wavlm["model_type"] == (layout.split("-")[0] if "-" in layout
                                                  else "wavlm")
    waves = 0.1 * torch.randn(2, 1, 8000)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(waves), model.eval()(waves))  # the same weights
    output = pipeline(SAMPLE_FILE)
    diarization = getattr(output, "speaker_diarization", output)
    assert len(list(diarization.itertracks())) > 0


@pytest.mark.parametrize("layout", FLOW_LAYOUTS)
def test_a_pruned_model_distils_finetunes_reloads_and_benches(students, pruned, layout,
                                                              tiny_protocol, tmp_path):
    teacher = students[layout][0]
    model = pruned[layout]
    teacher_path = save_checkpoint(teacher, tmp_path / "teacher.ckpt")
    distilled = distill_stage(tiny_protocol, tmp_path / "distill", teacher_path, model,
                              budget=ONE_STEP, progress=False)
    finetuned = finetune_stage(tiny_protocol, tmp_path / "finetune", distilled, budget=ONE_STEP,
                               progress=False)
    reloaded = Model.from_pretrained(finetuned)
    assert reloaded.structure == model.structure
    assert type(reloaded.frontend.wavlm) is type(model.frontend.wavlm)
    # it trained: the front end's weights moved
    before = dict(model.frontend.named_parameters())
    assert any(not torch.equal(parameter, before[name])
               for name, parameter in reloaded.frontend.named_parameters())
    results = bench_segmentation([teacher, reloaded], chunk_duration=0.5, batch_size=1,
                                 repeats=1, warmup=0)
    samples = 8000
    assert results[1].wavlm_macs == reloaded.structure.macs(samples)
    assert results[0].wavlm_macs == expected_macs(teacher.frontend, samples)
    assert results[1].parameter_ratio < 1


@pytest.mark.parametrize("layout", FLOW_LAYOUTS)
def test_int8_in_torch_and_onnx_runtime_stays_within_its_tolerance(pruned, layout):
    model = pruned[layout]
    quantized = quantize_int8(model)
    waves = 0.1 * torch.randn(2, 1, 8000)
    with torch.no_grad():
        difference = (quantized(waves).exp() - model(waves).exp()).abs().max().item()
    assert difference <= INT8_TOLERANCE
    report = export_onnx(model, int8=True)
    assert report.max_probability_diff <= INT8_TOLERANCE


@pytest.mark.parametrize("layout", FLOW_LAYOUTS)
def test_an_unpruned_stock_model_quantises_as_it_is(layout):
    # HuBERT's and wav2vec 2.0's stock attention reads its Linears as modules: int8 works on
    # it without the rebuild WavLM's needs
    model = tiny_model(layout, duration=0.5)
    architecture = model.frontend.architecture
    assert architecture.stock_attention_quantizes
    quantized = quantize_int8(model)
    attention = quantized.frontend.wavlm.encoder.layers[0].attention
    assert isinstance(attention, architecture.stock_attention)
    assert type(attention.q_proj).__name__ == "Linear" and "quantized" in type(
        attention.q_proj).__module__
    waves = 0.1 * torch.randn(1, 1, 8000)
    with torch.no_grad():
        assert (quantized(waves).exp() - model(waves).exp()).abs().max().item() <= INT8_TOLERANCE


def test_a_config_with_attention_adapters_is_refused():
    config = layout_config("wav2vec2-large", adapter_attn_dim=16)
    with pytest.raises(ValueError, match="adapter_attn_dim=16: attention adapters"):
        WavLMSegmentation(wavlm=config, **TINY_BACKEND)


def test_powerset_model_of_each_family_outputs_log_probabilities():
    for layout in LAYOUTS_HERE:
        model = WavLMSegmentation(wavlm=layout_config(layout), **TINY_BACKEND)
        model.specifications = powerset_specifications()
        model.build()
        with torch.no_grad():
            output = model.eval()(0.1 * torch.randn(2, 1, 16000))
        assert output.shape == (2, 49, 7)
        assert torch.allclose(output.exp().sum(-1), torch.ones(2, 49), atol=1e-5)


def test_a_recipe_s_tiny_preset_takes_an_architecture_and_refuses_its_unknown_keys():
    from pyannote_wavlm_prune.recipe.run import resolve_wavlm_option

    config = resolve_wavlm_option({"preset": "tiny", "architecture": "hubert", "family": "large",
                                   "feat_proj_layer_norm": False})
    assert (config.model_type, config.do_stable_layer_norm, config.feat_proj_layer_norm) == (
        "hubert", True, False)
    # a key of HuBERT's config is no key of wav2vec 2.0's
    with pytest.raises(ValueError, match="feat_proj_layer_norm"):
        resolve_wavlm_option({"preset": "tiny", "architecture": "wav2vec2",
                              "feat_proj_layer_norm": False})
    with pytest.raises(ValueError, match=r"architecture='bert', expected one of \['hubert', "
                                         r"'wav2vec2', 'wavlm'\]"):
        resolve_wavlm_option({"preset": "tiny", "architecture": "bert"})


def test_the_train_command_takes_a_hubert_directory_as_its_front_end(tiny_corpus, tmp_path):
    from pyannote_wavlm_prune.cli import main

    ARCHITECTURES["hubert"].model_class(layout_config("hubert-large")).save_pretrained(
        tmp_path / "hubert")
    arguments = ["train", "--protocol", "Simulated.SpeakerDiarization.tiny",
                 "--database", str(tiny_corpus / "database.yml"), "--output",
                 str(tmp_path / "teacher"), "--wavlm", str(tmp_path / "hubert"),
                 "--max-epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1",
                 "--duration", "1", "--batch-size", "2", "--no-progress"]
    assert main(arguments) == 0
    model = Model.from_pretrained(tmp_path / "teacher" / "model.ckpt")
    assert model.hparams.wavlm["model_type"] == "hubert"
    assert model.hparams.wavlm["do_stable_layer_norm"] is True
    assert type(model.frontend.wavlm).__name__ == "HubertModel"
