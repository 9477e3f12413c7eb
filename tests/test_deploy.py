"""Deployment: ONNX export and ONNX Runtime, int8, folded weight norm, runtimes of pipelines."""

import argparse
import copy
import sys
import warnings

import pytest
import torch
import yaml
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import network_depth, rounding_bound, tiny_model
from pyannote.audio import Model, Pipeline
from pyannote.audio.sample import SAMPLE_FILE
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.commands import export_onnx as export_onnx_command
from pyannote_wavlm_prune.deploy import (
    OnnxMismatchError,
    OnnxSegmentation,
    export_onnx,
    optimize_for_inference,
    quantize_int8,
    segmentation_for_runtime,
)
from pyannote_wavlm_prune.deploy.inference import is_optimized_for_inference
from pyannote_wavlm_prune.deploy.onnx import (
    DIGEST_KEY,
    DIGEST_TRAILER_SIZE,
    OnnxDigestError,
    inference_session,
    read_graph,
    seal,
    unseal,
)
from pyannote_wavlm_prune.deploy.onnx import quantize_graph_int8 as quantize_onnx_int8
from pyannote_wavlm_prune.deploy.segmentation import run_session
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, export_pipeline, save_pipeline
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}
# int8 (Linear/MatMul weights): max |p_int8 - p_fp32| measured 0.03 to 0.08 on random tiny
# models (width 32: per-tensor weight scales are coarse), 0.1 is the export's default check
INT8_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    return tiny_model(duration=5.0, structure=PRUNED)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pruned):
    return save_checkpoint(pruned, tmp_path_factory.mktemp("checkpoint") / "pruned.ckpt")


@pytest.fixture(scope="module")
def onnx_file(checkpoint):
    """The tiny pruned model exported by the export-onnx command (the only export: ~1 min)."""
    output = checkpoint.parent / "pruned.onnx"
    parser = argparse.ArgumentParser()
    export_onnx_command.add_arguments(parser)
    assert export_onnx_command.run(parser.parse_args([str(checkpoint), "--output",
                                                      str(output)])) == 0
    return output


@pytest.fixture(scope="module")
def embedding():
    return untrained_embedding(dimension=32)


def rttm(annotation) -> str:
    return "\n".join(f"{segment.start:.3f} {segment.duration:.3f} {label}"
                     for segment, _, label in annotation.itertracks(yield_label=True))


# --- ONNX graphs ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 1, 80000), (1, 1, 23456)])
def test_onnx_graph_equals_torch_at_other_batch_sizes_and_lengths(onnx_file, pruned, shape):
    session = inference_session(onnx_file)
    waveforms = 0.1 * torch.randn(*shape)
    with torch.inference_mode():
        expected = pruned(waveforms)
    actual = run_session(session, waveforms)
    assert actual.shape == expected.shape == (shape[0], pruned.num_frames(shape[-1]), 7)
    # float32 is the point: ONNX Runtime's kernels round differently from torch's
    difference = (actual - expected).abs().max().item()
    assert difference <= rounding_bound(expected, network_depth(pruned))


def test_export_leaves_the_model_untouched_and_the_file_without_temporaries(
    onnx_file, pruned
):
    assert not is_optimized_for_inference(pruned)  # the copy was folded, not the model
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["pruned.ckpt", "pruned.onnx"]


def test_int8_graph_is_within_its_tolerance_and_smaller(onnx_file, pruned):
    graph = read_graph(onnx_file)
    int8 = quantize_onnx_int8(graph)
    session = inference_session(int8)
    waveforms = 0.1 * torch.randn(2, 1, 80000)
    with torch.inference_mode():
        expected = pruned(waveforms).exp()
    difference = (run_session(session, waveforms).exp() - expected).abs().max().item()
    assert 0 < difference <= INT8_TOLERANCE
    assert len(int8) < len(graph)


def test_graph_has_gelu_nodes_and_int8_quantises_only_weight_products(onnx_file, pruned):
    """Opset 20: GELU is one node (ONNX Runtime did not fuse opset 18's five-node form);
    int8: every product with a weight is quantised, no product of two activations is."""
    import onnx

    graph = onnx.load_from_string(onnx_file.read_bytes())
    kinds = [node.op_type for node in graph.graph.node]
    gelus = sum(isinstance(m, torch.nn.GELU) or type(m).__name__ == "GELUActivation"
                for m in pruned.modules())
    assert {o.domain: o.version for o in graph.opset_import}[""] == 20
    assert kinds.count("Erf") == 0 and kinds.count("Gelu") >= gelus > 0

    int8 = onnx.load_from_string(quantize_onnx_int8(read_graph(onnx_file))).graph
    weights = {initializer.name for initializer in int8.initializer}
    produced = {output: node for node in int8.node for output in node.output}

    def is_weight(name):  # an initializer, possibly through DequantizeLinear/Transpose
        node = produced.get(name)
        return name in weights or (node is not None and all(map(is_weight, node.input)))

    quantised = [n for n in int8.node if n.op_type in (
        "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")]
    float_matmuls = [n for n in int8.node if n.op_type == "MatMul"]
    assert quantised and all(is_weight(n.input[1]) for n in quantised)
    assert all(not is_weight(n.input[1]) for n in float_matmuls)  # activations x activations
    assert any(not is_weight(n.input[1]) for n in float_matmuls)  # attention scores exist


def test_cpu_sessions_leave_skip_layer_norm_unfused(onnx_file, monkeypatch):
    """ONNX Runtime's fused SkipLayerNormalization CPU kernel was 4x slower than the Add and
    LayerNormalization it replaces: CPU sessions turn the fusion off."""
    import onnxruntime

    created = []
    real = onnxruntime.InferenceSession

    def spy(*args, **kwargs):
        created.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    session = inference_session(onnx_file)
    assert created[0]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_torch_int8_copy_is_within_tolerance_and_quantises_every_linear_layer(pruned):
    quantized = quantize_int8(pruned)
    linear = [m for m in quantized.modules() if type(m) is torch.nn.Linear]
    dynamic = [m for m in quantized.modules()
               if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert linear == [] and len(dynamic) > 10
    waveforms = 0.1 * torch.randn(2, 1, 80000)
    with torch.inference_mode():
        difference = (quantized(waveforms).exp() - pruned(waveforms).exp()).abs().max().item()
    assert 0 < difference <= INT8_TOLERANCE
    assert all(type(m) is not torch.ao.nn.quantized.dynamic.Linear for m in pruned.modules())


def test_onnx_segmentation_has_the_frames_of_the_torch_model(onnx_file, pruned):
    model = OnnxSegmentation.from_onnx(onnx_file, pruned)
    frames, expected = model.receptive_field, pruned.receptive_field
    assert (frames.start, frames.duration, frames.step) == (
        expected.start, expected.duration, expected.step)
    for num_samples in (720, 16000, 80000, 123457):
        assert model.num_frames(num_samples) == pruned.num_frames(num_samples)
    assert model.specifications == pruned.specifications


def test_onnx_segmentation_checkpoint_carries_its_graph(onnx_file, pruned, tmp_path):
    model = OnnxSegmentation.from_onnx(onnx_file, pruned)
    path = save_checkpoint(model, tmp_path / "onnx.ckpt")
    reloaded = Model.from_pretrained(path)
    assert type(reloaded) is OnnxSegmentation
    assert reloaded.onnx_model == read_graph(onnx_file)
    waveforms = 0.1 * torch.randn(2, 1, 80000)
    with torch.inference_mode():
        expected = pruned(waveforms)
        difference = (reloaded(waveforms) - expected).abs().max().item()
    # float32 is the point: ONNX Runtime's kernels round differently from torch's
    assert difference <= rounding_bound(expected, network_depth(pruned))
    assert copy.deepcopy(reloaded)(waveforms).shape == (2, 249, 7)  # sessions are not copied


# --- pipelines -----------------------------------------------------------------------------


def test_onnx_pipeline_directory_loads_offline_and_diarizes_as_the_torch_pipeline(
    onnx_file, pruned, embedding, tmp_path
):
    torch_pipeline = SpeakerDiarization(segmentation=pruned, embedding=embedding, **FAST)
    expected = rttm(torch_pipeline.instantiate(AGGLOMERATIVE)(SAMPLE_FILE).speaker_diarization)
    assert expected.count("\n") + 1 >= 10  # a real diarization, not an empty one

    directory = export_pipeline(
        tmp_path / "onnx-pipeline", OnnxSegmentation.from_onnx(onnx_file, pruned), embedding,
        params=AGGLOMERATIVE, segmentation_runtime="onnxruntime", **FAST,
    )
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert config["pipeline"]["params"]["segmentation_runtime"] == "onnxruntime"

    pipeline = Pipeline.from_pretrained(directory)
    assert type(pipeline._segmentation.model) is OnnxSegmentation
    assert rttm(pipeline(SAMPLE_FILE).speaker_diarization) == expected


def test_torch_int8_runtime_quantises_at_load_and_saves_the_fp32_checkpoint(
    pruned, embedding, tmp_path
):
    directory = export_pipeline(tmp_path / "int8", pruned, embedding, params=AGGLOMERATIVE,
                                segmentation_runtime="torch-int8", **FAST)
    pipeline = Pipeline.from_pretrained(directory)
    assert pipeline.segmentation_runtime == "torch-int8"
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
               for m in pipeline._segmentation.model.modules())
    # quantised at load as here: the same int8 model, the same arithmetic, the same output
    here = SpeakerDiarization(segmentation=pruned, embedding=embedding,
                              segmentation_runtime="torch-int8", **FAST)
    expected = rttm(here.instantiate(AGGLOMERATIVE)(SAMPLE_FILE).speaker_diarization)
    assert expected.count("\n") + 1 >= 10  # a real diarization, not an empty one
    assert rttm(pipeline(SAMPLE_FILE).speaker_diarization) == expected

    saved = save_pipeline(pipeline, tmp_path / "saved")
    reloaded = Model.from_pretrained(saved / "segmentation" / "pytorch_model.bin")
    assert sorted(reloaded.state_dict()) == sorted(pruned.state_dict())
    assert yaml.safe_load((saved / "config.yaml").read_text())["pipeline"]["params"][
        "segmentation_runtime"] == "torch-int8"


def test_one_registry_serves_both_models(pruned, embedding):
    from pyannote_wavlm_prune.deploy.runtime import (
        EMBEDDING_RUNTIMES,
        REGISTRY,
        RUNTIMES,
        model_for_runtime,
    )

    assert {kind: entry.runtimes for kind, entry in REGISTRY.items()} == {
        "segmentation": RUNTIMES, "embedding": EMBEDDING_RUNTIMES}
    assert model_for_runtime("segmentation", pruned, None) is pruned
    assert model_for_runtime("embedding", embedding, "torch") is embedding
    quantized = model_for_runtime("segmentation", pruned, "torch-int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.modules())
    with pytest.raises(ValueError, match=r"model='vad': expected one of \['segmentation', "
                                         r"'embedding'\]"):
        model_for_runtime("vad", pruned, "torch")
    with pytest.raises(ValueError, match="embedding_runtime='torch-int8': expected one of"):
        model_for_runtime("embedding", embedding, "torch-int8")


def test_the_names_users_imported_before_the_onnx_kit_still_import():
    from pyannote_wavlm_prune import deploy
    from pyannote_wavlm_prune.deploy import embedding, onnx, quantize, runtime, segmentation

    # quantize_int8 was the name of both: a Module's copy (deploy, deploy.quantize) and a
    # graph's bytes (deploy.onnx)
    assert deploy.quantize_int8 is quantize.quantize_int8 is quantize.quantize_model_int8
    assert onnx.quantize_int8 is onnx.quantize_graph_int8 is deploy.quantize_graph_int8
    assert embedding.EMBEDDING_RUNTIMES is runtime.EMBEDDING_RUNTIMES
    with pytest.warns(DeprecationWarning, match="import it from "
                                                "pyannote_wavlm_prune.deploy.segmentation"):
        from pyannote_wavlm_prune.deploy.onnx import export_onnx as moved
    assert moved is segmentation.export_onnx is deploy.export_onnx


# --- folded weight norm ---------------------------------------------------------------------


def test_folded_weight_norm_keeps_outputs_and_state_dict_keys_and_spares_copies():
    # float64: g = ||w||, v = w saved for a folded weight w give w again up to rounding only
    model = tiny_model(structure=PRUNED).double()
    conv = "frontend.wavlm.encoder.pos_conv_embed.conv.parametrizations.weight"
    with torch.no_grad():  # g is ||v|| at initialisation, not after training
        model.get_submodule(conv).original0.mul_(1.5)
    original = copy.deepcopy(model)
    optimized = optimize_for_inference(copy.deepcopy(model))
    waveforms = 0.1 * torch.randn(2, 1, 32000, dtype=torch.float64)
    with torch.inference_mode():
        expected = model(waveforms)
        # the folded weight is the one weight_norm computes: the same arithmetic, exact
        assert torch.equal(optimized(waveforms), expected)
        # torch's remove_parametrizations would have broken the copies (shared class)
        assert torch.equal(original(waveforms), expected)
    assert is_optimized_for_inference(optimized) and not is_optimized_for_inference(model)
    folded, reference = optimized.state_dict(), model.state_dict()
    assert sorted(folded) == sorted(reference)
    g, v = f"{conv}.original0", f"{conv}.original1"
    assert all(torch.equal(folded[k], reference[k]) for k in reference if k not in (g, v))  # copies
    weight = torch._weight_norm(reference[v], reference[g], 2)
    difference = (torch._weight_norm(folded[v], folded[g], 2) - weight).abs().max().item()
    assert difference <= rounding_bound(weight, 2)  # a norm, then a weight_norm, of w

    # each format loads into the other
    fresh = tiny_model(structure=PRUNED).double()
    fresh.load_state_dict(folded)
    optimized_fresh = optimize_for_inference(tiny_model(structure=PRUNED).double())
    optimized_fresh.load_state_dict(reference)
    with torch.inference_mode():
        # folded at load by weight_norm's own function: the same weight, exact
        assert torch.equal(optimized_fresh(waveforms), expected)
        difference = (fresh(waveforms) - expected).abs().max().item()
    assert difference <= rounding_bound(expected, network_depth(model))


# --- clear errors ---------------------------------------------------------------------------


def test_an_onnx_file_of_another_model_is_named(onnx_file, tmp_path):
    torch.manual_seed(1)
    other = tiny_model(duration=5.0, structure=PRUNED)
    with pytest.raises(OnnxMismatchError, match=f"ONNX file {onnx_file} does not match"):
        OnnxSegmentation.from_onnx(onnx_file, other)


def test_a_file_that_is_not_onnx_is_named(pruned, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    with pytest.raises(OnnxMismatchError, match=f"ONNX file {garbage} cannot be read"):
        OnnxSegmentation.from_onnx(garbage, pruned)


def test_missing_onnxruntime_is_named_with_its_install_command(pruned, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(ImportError, match=r"onnxruntime is not installed.*\[onnx\]"):
        export_onnx(pruned)


def test_unknown_runtime_and_runtime_mismatch_are_named(onnx_file, pruned):
    with pytest.raises(ValueError, match="segmentation_runtime='tensorrt': expected one of"):
        SpeakerDiarization(segmentation=pruned, clustering="OracleClustering",
                           segmentation_runtime="tensorrt")
    onnx_model = OnnxSegmentation.from_onnx(onnx_file, pruned)
    with pytest.raises(ValueError, match="segmentation_runtime='torch-int8', but the "
                                         "segmentation checkpoint holds an ONNX graph"):
        segmentation_for_runtime(onnx_model, "torch-int8")


def test_an_unpruned_stock_model_is_quantised_through_its_full_structure():
    model = tiny_model()
    quantized = quantize_int8(model)
    assert not any(isinstance(m, WavLMAttention) for m in quantized.modules())
    waveforms = 0.1 * torch.randn(2, 1, 32000)
    with torch.inference_mode():
        difference = (quantized(waveforms).exp() - model(waveforms).exp()).abs().max().item()
    assert 0 < difference <= INT8_TOLERANCE


def test_quantising_a_gated_model_is_refused():
    from pyannote_wavlm_prune import attach_gates

    with pytest.raises(TypeError, match="is a stock transformers WavLMAttention.*ungated"):
        quantize_int8(attach_gates(tiny_model()))


def test_export_onnx_command_refuses_to_overwrite(onnx_file, checkpoint):
    parser = argparse.ArgumentParser()
    export_onnx_command.add_arguments(parser)
    with pytest.raises(SystemExit, match=f"{onnx_file} exists"):
        export_onnx_command.run(parser.parse_args([str(checkpoint), "--output", str(onnx_file)]))


# --- integrity: an exported graph carries its digest, checked on load ------------------------


def flip(data: bytes, position: int) -> bytes:
    """`data` with the byte at `position` changed (its lowest bit flipped)."""
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1:]


def test_an_exported_graph_carries_its_sha256_where_onnx_runtime_reads_it(onnx_file):
    import hashlib

    import onnx

    data = onnx_file.read_bytes()
    graph = read_graph(onnx_file)
    assert data == seal(graph) and len(data) == len(graph) + DIGEST_TRAILER_SIZE
    digest = hashlib.sha256(graph).hexdigest()
    # the file is one ONNX model: the graph plus one metadata entry, for every ONNX reader
    session = inference_session(data)
    assert session.get_modelmeta().custom_metadata_map == {DIGEST_KEY: digest}
    assert {p.key: p.value for p in onnx.load_from_string(data).metadata_props} == {
        DIGEST_KEY: digest}


def test_altering_one_byte_of_an_exported_graph_file_is_an_error_naming_it(
        onnx_file, pruned, tmp_path):
    import hashlib

    data = onnx_file.read_bytes()
    altered = tmp_path / "altered.onnx"
    altered.write_bytes(flip(data, len(data) // 2))
    expected = hashlib.sha256(data[:-DIGEST_TRAILER_SIZE]).hexdigest()
    found = hashlib.sha256(altered.read_bytes()[:-DIGEST_TRAILER_SIZE]).hexdigest()
    message = f"ONNX file {altered} is not the graph that was exported: its sha256 is {found}, " \
              f"its export recorded {expected}"
    with pytest.raises(OnnxDigestError, match=message):
        OnnxSegmentation.from_onnx(altered, pruned)
    with pytest.raises(OnnxDigestError, match=message):
        inference_session(altered)


def test_every_byte_of_the_digest_record_is_checked(onnx_file):
    """No one altered byte makes a sealed graph read as one written before digests."""
    data = onnx_file.read_bytes()
    for position in range(len(data) - DIGEST_TRAILER_SIZE, len(data)):
        with pytest.raises(OnnxDigestError):
            unseal(flip(data, position), "graph")


def test_a_graph_written_before_digests_loads_with_one_warning(onnx_file, pruned, tmp_path):
    old = tmp_path / "old.onnx"
    old.write_bytes(read_graph(onnx_file))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            model = OnnxSegmentation.from_onnx(old, pruned)
    said = [str(w.message) for w in caught if "digest" in str(w.message)]
    assert said == [f"ONNX file {old} carries no sha256 digest (written before exported graphs "
                    "did): loaded unchecked; export it again to have it checked."]
    assert model.onnx_model == read_graph(onnx_file)


@pytest.fixture(scope="module")
def onnx_pipeline(onnx_file, pruned, tmp_path_factory):
    return export_pipeline(tmp_path_factory.mktemp("pipelines") / "onnx",
                           OnnxSegmentation.from_onnx(onnx_file, pruned),
                           clustering="OracleClustering", **FAST)


def altered_pipeline(onnx_pipeline, directory, alter) -> tuple:
    """A copy of `onnx_pipeline` whose segmentation checkpoint's graph bytes went through
    `alter`, the checkpoint otherwise intact; and the digests before and after."""
    import hashlib
    import shutil

    shutil.copytree(onnx_pipeline, directory)
    path = directory / "segmentation" / "pytorch_model.bin"
    content = torch.load(path, weights_only=False)
    graph = content["onnx"]["model"]
    content["onnx"]["model"] = alter(graph)
    torch.save(content, path)
    digests = [hashlib.sha256(g[:-DIGEST_TRAILER_SIZE]).hexdigest()
               for g in (graph, content["onnx"]["model"])]
    return path, digests


def test_the_graph_of_a_pipeline_checkpoint_carries_its_digest(onnx_pipeline, onnx_file):
    content = torch.load(onnx_pipeline / "segmentation" / "pytorch_model.bin", weights_only=False)
    assert content["onnx"]["model"] == onnx_file.read_bytes()  # sealed as the file is
    pipeline = Pipeline.from_pretrained(onnx_pipeline)
    assert pipeline._segmentation.model.onnx_model == read_graph(onnx_file)


def test_a_pipeline_whose_graph_was_altered_fails_to_load_naming_the_file(
        onnx_pipeline, tmp_path):
    from pyannote_wavlm_prune.pipelines import load_pipeline

    path, (expected, found) = altered_pipeline(onnx_pipeline, tmp_path / "pipeline",
                                               lambda graph: flip(graph, len(graph) // 2))
    message = f"segmentation {path}: the ONNX graph of this checkpoint is not the graph that " \
              f"was exported: its sha256 is {found}, its export recorded {expected}"
    with pytest.raises(OnnxDigestError, match=message):
        Pipeline.from_pretrained(tmp_path / "pipeline")
    with pytest.raises(OnnxDigestError, match=message):
        load_pipeline(tmp_path / "pipeline")


def test_evaluate_says_which_graph_was_altered(onnx_pipeline, tiny_corpus, tmp_path, capsys):
    from pyannote_wavlm_prune.cli import main

    path, (expected, found) = altered_pipeline(onnx_pipeline, tmp_path / "pipeline",
                                               lambda graph: flip(graph, len(graph) // 3))
    argv = ["evaluate", str(tmp_path / "pipeline"), "--protocol",
            "Simulated.SpeakerDiarization.tiny", "--database", str(tiny_corpus / "database.yml"),
            "--no-progress"]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(path) in line and f"its sha256 is {found}" in line and expected in line


def test_a_pipeline_checkpoint_of_a_graph_written_before_digests_still_loads(
        onnx_pipeline, onnx_file, tmp_path):
    # the graph as checkpoints held it before: its bytes alone
    altered_pipeline(onnx_pipeline, tmp_path / "pipeline",
                     lambda graph: graph[:-DIGEST_TRAILER_SIZE])
    with pytest.warns(UserWarning, match="carries no sha256 digest"):
        pipeline = Pipeline.from_pretrained(tmp_path / "pipeline")
    assert pipeline._segmentation.model.onnx_model == read_graph(onnx_file)
