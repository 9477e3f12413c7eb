"""Speaker embedding runtimes: a WeSpeaker ResNet's trunk run by ONNX Runtime (fp32, int8),
the pipeline option `embedding_runtime` and its way through config.yaml and the commands."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import onnx
import pytest
import torch
import yaml
from diarizen_helpers import TINY_BACKEND, TINY_PRUNED, write_hub
from helpers import FAST_PIPELINE as FAST
from helpers import random_wespeaker, tiny_model
from pyannote.audio import Model, Pipeline
from pyannote.audio.models.embedding import WeSpeakerResNet34
from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.cli import main
from pyannote_wavlm_prune.deploy import embedding as runtime
from pyannote_wavlm_prune.deploy.embedding import (
    OnnxTrunk,
    embedding_for_runtime,
    runtime_of,
    speech_like,
)
from pyannote_wavlm_prune.deploy.runtime import EMBEDDING_RUNTIMES
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, export_pipeline, save_pipeline
from pyannote_wavlm_prune.pipelines.chunkwise_embeddings import frame_wise_split_problem
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}
# fp32: the float32 kernels of torch and ONNX Runtime sum in different orders; measured on
# this random ResNet34, frames differ by 6e-7 of their largest value and embeddings by 5e-8
# (max abs): 1e-4 separates rounding from a wrong graph
FP32_TOLERANCE = 1e-4
# int8 (static QDQ): measured cosine distance of embeddings to torch's 4e-5 to 4e-4, frames
# off by 0.02 to 0.035 (max abs, largest frame value about 0.8); stated bounds 0.01 and 0.1
INT8_COSINE_DISTANCE = 0.01
INT8_FRAMES = 0.1


@pytest.fixture(scope="module")
def resnet():
    """A random WeSpeakerResNet34 (community-1's embedding architecture)."""
    return random_wespeaker()


@pytest.fixture(scope="module")
def fp32(resnet):
    return embedding_for_runtime(resnet, "onnxruntime")


@pytest.fixture(scope="module")
def int8(resnet):
    return embedding_for_runtime(resnet, "onnxruntime-int8")


@pytest.fixture
def cached_export(monkeypatch, resnet, fp32):
    """Pipelines loaded in a test reuse the fp32 fixture's graph (one export per module):
    what they load must be the fixture's model."""
    real = runtime.export_trunk

    def export_trunk(model, *, int8=False, **kwargs):
        same = all(torch.equal(value, resnet.state_dict()[key])
                   for key, value in model.state_dict().items())
        return fp32.resnet.export if same and not int8 else real(model, int8=int8, **kwargs)

    monkeypatch.setattr(runtime, "export_trunk", export_trunk)


def inputs(model, num_chunks: int, seconds: float, seed: int = 3
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic speech and (chunks, 3 speakers, frames) masks, the third speaker in the first
    third of the chunk only."""
    waveforms = speech_like(num_chunks, round(seconds * 16000) + 37, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    num_frames = model.num_frames(waveforms.shape[-1])
    masks = (torch.rand(num_chunks, 3, num_frames, generator=generator) > 0.4).float()
    masks[:, 2] = 0.0
    masks[:, 2, : num_frames // 3] = 1.0
    return waveforms, masks


# --- ONNX Runtime against torch ------------------------------------------------------------


@pytest.mark.parametrize(("num_chunks", "seconds"), [(3, 1.0), (1, 2.5)])
def test_onnx_frames_and_embeddings_equal_torch(resnet, fp32, num_chunks, seconds):
    waveforms, masks = inputs(resnet, num_chunks, seconds)
    with torch.inference_mode():
        expected = resnet.forward_frames(waveforms)
        frames = fp32.forward_frames(waveforms)
        embeddings = fp32.forward_embedding(frames, weights=masks)
        reference = resnet.forward_embedding(expected, weights=masks)
        called = fp32(waveforms, weights=masks)
    assert frames.shape == expected.shape
    assert (frames - expected).abs().max() <= FP32_TOLERANCE * expected.abs().max()
    assert embeddings.shape == (num_chunks, 3, 256)
    assert (embeddings - reference).abs().max().item() <= FP32_TOLERANCE
    assert (called - reference).abs().max().item() <= FP32_TOLERANCE
    export = fp32.resnet.export
    assert not export.int8 and export.relative_diff <= FP32_TOLERANCE
    assert "fp32" in export.summary()


def test_int8_embeddings_are_within_the_bound_and_quantised(resnet, fp32, int8):
    waveforms, masks = inputs(resnet, 4, 2.0, seed=5)
    with torch.inference_mode():
        expected = resnet.forward_frames(waveforms)
        frames = int8.forward_frames(waveforms)
        reference = resnet.forward_embedding(expected, weights=masks)
        embeddings = int8(waveforms, weights=masks)
    difference = (frames - expected).abs().max().item()
    assert 0 < difference <= INT8_FRAMES * expected.abs().max().item()
    distance = 1 - torch.nn.functional.cosine_similarity(embeddings, reference, dim=-1)
    assert distance.max().item() <= INT8_COSINE_DISTANCE
    assert not torch.equal(embeddings, reference)
    # static QDQ: int8 weights and QuantizeLinear/DequantizeLinear pairs around each Conv
    graph = onnx.load_model_from_string(int8.resnet.export.onnx)
    kinds = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= kinds
    assert len(int8.resnet.export.onnx) < 0.3 * len(fp32.resnet.export.onnx)
    assert int8.resnet.export.int8 and int8.resnet.export.max_cosine_distance <= 0.01


def test_pyannote_uses_the_onnx_model_as_the_torch_one(resnet, fp32, tmp_path):
    assert isinstance(fp32, WeSpeakerResNet34) and isinstance(fp32.resnet, OnnxTrunk)
    assert runtime_of(fp32) == "onnxruntime" and runtime_of(resnet) is None
    assert isinstance(fp32, Model) and type(fp32).__name__ == "WeSpeakerResNet34"
    assert fp32.dimension == 256 and fp32.audio.sample_rate == 16000
    assert fp32.specifications == resnet.specifications
    assert not fp32.training

    torch_embedding, onnx_embedding = PretrainedSpeakerEmbedding(resnet), \
        PretrainedSpeakerEmbedding(fp32)
    # pyannote probes the shortest input by calling the model on short random ones
    assert onnx_embedding.min_num_samples == torch_embedding.min_num_samples
    assert onnx_embedding.dimension == 256 and onnx_embedding.sample_rate == 16000
    waveforms, masks = inputs(resnet, 2, 1.5)
    expected = torch_embedding(waveforms, masks=masks[:, 0])
    actual = onnx_embedding(waveforms, masks=masks[:, 0])
    assert actual.shape == (2, 256)
    assert abs(actual - expected).max() <= FP32_TOLERANCE

    # copies and pickles rebuild the session; the state dict and checkpoint are the torch
    # model's, which reloads as a plain WeSpeakerResNet34
    for clone in (copy.deepcopy(fp32), pickle.loads(pickle.dumps(fp32))):
        assert type(clone) is type(fp32)
        with torch.inference_mode():
            assert torch.equal(clone(waveforms), fp32(waveforms))
    assert sorted(fp32.state_dict()) == sorted(resnet.state_dict())
    reloaded = Model.from_pretrained(save_checkpoint(fp32, tmp_path / "embedding.bin"))
    assert type(reloaded) is WeSpeakerResNet34
    assert all(torch.equal(value, resnet.state_dict()[key])
               for key, value in reloaded.state_dict().items())

    # the same runtime again is the model itself, "torch" the torch model it was made from
    assert embedding_for_runtime(fp32, "onnxruntime") is fp32
    plain = embedding_for_runtime(fp32, "torch")
    assert type(plain) is WeSpeakerResNet34 and runtime_of(plain) is None
    assert embedding_for_runtime(resnet, "torch") is resnet
    assert embedding_for_runtime(resnet, None) is resnet


# --- clear errors ---------------------------------------------------------------------------


def test_a_model_without_a_trunk_refuses_onnx_and_runs_with_torch(tmp_path):
    xvector = untrained_embedding(dimension=32)
    for name in ("onnxruntime", "onnxruntime-int8"):
        with pytest.raises(ValueError, match=f"embedding_runtime='{name}'.* embedding model is "
                                             "a XVectorMFCC.*expected a model made of "
                                             r"compute_fbank\(waveforms\), "
                                             r"resnet.forward_frames\(fbank\)"):
            embedding_for_runtime(xvector, name)
    assert embedding_for_runtime(xvector, "torch") is xvector
    # export_pipeline says so before writing anything
    with pytest.raises(ValueError, match="XVectorMFCC"):
        export_pipeline(tmp_path / "pipeline", tiny_model(), xvector, params=AGGLOMERATIVE,
                        embedding_runtime="onnxruntime")
    assert not (tmp_path / "pipeline").exists()


def test_unknown_embedding_runtime_is_named(resnet):
    assert list(EMBEDDING_RUNTIMES) == ["torch", "onnxruntime", "onnxruntime-int8"]
    with pytest.raises(ValueError, match="embedding_runtime='tensorrt': expected one of"):
        embedding_for_runtime(resnet, "tensorrt")
    with pytest.raises(ValueError, match="embedding_runtime='tensorrt': expected one of"):
        SpeakerDiarization(segmentation=tiny_model(), embedding=resnet,
                           embedding_runtime="tensorrt")


# --- pipelines, config.yaml and commands -----------------------------------------------------


def test_config_round_trip_keeps_the_embedding_runtime(resnet, cached_export, tmp_path):
    directory = export_pipeline(tmp_path / "pipeline", tiny_model(), resnet,
                                params=AGGLOMERATIVE, embedding_runtime="onnxruntime", **FAST)
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert config["pipeline"]["params"]["embedding_runtime"] == "onnxruntime"
    # the embedding checkpoint stays the torch model's
    stored = Model.from_pretrained(directory / "embedding" / "pytorch_model.bin")
    assert type(stored) is WeSpeakerResNet34

    pipeline = Pipeline.from_pretrained(directory)
    assert pipeline.embedding_runtime == "onnxruntime"
    model = pipeline._embedding.model_
    assert isinstance(model.resnet, OnnxTrunk) and runtime_of(model) == "onnxruntime"
    waveforms, masks = inputs(resnet, 2, 1.0)
    expected = PretrainedSpeakerEmbedding(resnet)(waveforms, masks=masks[:, 1])
    assert abs(pipeline._embedding(waveforms, masks=masks[:, 1]) - expected).max() \
        <= FP32_TOLERANCE

    saved = save_pipeline(pipeline, tmp_path / "saved")
    assert yaml.safe_load((saved / "config.yaml").read_text())["pipeline"]["params"][
        "embedding_runtime"] == "onnxruntime"
    assert type(Model.from_pretrained(saved / "embedding" / "pytorch_model.bin")) \
        is WeSpeakerResNet34

    # without the option, config.yaml has none and the pipeline runs the torch model
    plain = export_pipeline(tmp_path / "plain", tiny_model(), resnet, params=AGGLOMERATIVE,
                            **FAST)
    assert "embedding_runtime" not in yaml.safe_load(
        (plain / "config.yaml").read_text())["pipeline"]["params"]
    loaded = Pipeline.from_pretrained(plain)
    assert loaded.embedding_runtime is None
    assert runtime_of(loaded._embedding.model_) is None


def test_export_command_writes_the_embedding_runtime(resnet, tmp_path, capsys):
    segmentation = save_checkpoint(tiny_model(), tmp_path / "segmentation.ckpt")
    embedding = save_checkpoint(resnet, tmp_path / "embedding.bin")
    output = tmp_path / "pipeline"
    assert main(["export", "--segmentation", str(segmentation), "--embedding", str(embedding),
                 "--embedding-runtime", "onnxruntime-int8", "--output", str(output)]) == 0
    assert f"pipeline written to {output}" in capsys.readouterr().out
    config = yaml.safe_load((output / "config.yaml").read_text())
    assert config["pipeline"]["params"]["embedding_runtime"] == "onnxruntime-int8"


def test_import_diarizen_command_passes_the_embedding_runtime(tmp_path, capsys):
    hub = tmp_path / "diarizen-tiny"
    write_hub(hub, TINY_PRUNED, seed=2, backend=TINY_BACKEND)
    structure = tmp_path / "structure.yaml"
    structure.write_text(yaml.safe_dump(TINY_PRUNED))
    output = tmp_path / "pipeline"
    assert main(["import-diarizen", str(hub), "--output", str(output), "--structure",
                 str(structure), "--embedding-runtime", "onnxruntime"]) == 0
    config = yaml.safe_load((output / "config.yaml").read_text())
    # DiariZen's WeSpeaker stays a hub name, loaded (and exported) with the pipeline
    assert config["pipeline"]["params"]["embedding_runtime"] == "onnxruntime"
    assert config["pipeline"]["params"]["embedding"] == "pyannote/wespeaker-voxceleb-resnet34-LM"


def test_a_pipeline_with_the_onnx_embedding_keeps_the_per_chunk_path(resnet, fp32):
    from helpers import powerset_specifications
    from pyannote.audio.sample import SAMPLE_FILE
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    from pyannote_wavlm_prune.frontends.presets import tiny_config
    from pyannote_wavlm_prune.models.wavlm_segmentation import WavLMSegmentation
    from pyannote_wavlm_prune.pipelines import SpeakerDiarization

    segmentation = WavLMSegmentation(wavlm=tiny_config())
    segmentation.specifications = powerset_specifications(duration=2.0)
    segmentation.build()
    onnx = SpeakerDiarization(segmentation=segmentation.eval(), embedding=fp32)
    plain = SpeakerDiarization(segmentation=segmentation, embedding=resnet)
    assert onnx.embedding_path == plain.embedding_path == "per-chunk"
    masks = np.zeros((3, 50, 2))
    masks[0, :, 0] = masks[2, 10:, 1] = 1  # chunk 1: nobody
    segmentations = SlidingWindowFeature(masks, SlidingWindow(start=0.0, duration=2.0, step=4.0))
    file = {"uri": "sample", "waveform": SAMPLE_FILE["waveform"], "sample_rate": 16000}
    expected = plain.get_embeddings(file, segmentations)
    actual = onnx.get_embeddings(file, segmentations)
    # ONNX Runtime's float32 kernels against torch's (the frames' bound above, on embeddings)
    assert np.abs(actual - expected).max() <= FP32_TOLERANCE * max(1.0, np.abs(expected).max())


def test_train_embedding_trains_the_wespeaker_resnet34_whose_trunk_the_onnx_runtimes_export(
        tiny_protocol, tmp_path):
    from pyannote_wavlm_prune.pipelines.embedding_training import train_embedding

    torch.manual_seed(0)  # train_embedding seeds 0 too: `initial` is its model before training
    initial = WeSpeakerResNet34()
    trained = train_embedding(tiny_protocol, checkpoint=tmp_path / "resnet.ckpt", max_epochs=1,
                              architecture="wespeaker-resnet34", num_classes_per_batch=2,
                              num_chunks_per_class=2,
                              trainer_options={"limit_train_batches": 1})
    assert isinstance(trained, WeSpeakerResNet34) and trained.dimension == 256
    # one optimizer step moved the trunk's first convolution (Adam: by about the learning rate)
    moved = (trained.resnet.conv1.weight - initial.resnet.conv1.weight).abs().max().item()
    assert moved > 1e-5
    loaded = Model.from_pretrained(tmp_path / "resnet.ckpt")
    assert isinstance(loaded, WeSpeakerResNet34)
    torch.testing.assert_close(loaded.resnet.conv1.weight, trained.resnet.conv1.weight,
                               rtol=0, atol=0)  # the same tensors, saved and read back
    # the split the per-chunk path and the ONNX runtimes use (the export itself: above)
    assert frame_wise_split_problem(loaded) is None


def test_train_embedding_names_a_bad_architecture_or_dimension(tiny_protocol):
    from pyannote_wavlm_prune.pipelines.embedding_training import train_embedding

    with pytest.raises(ValueError, match=r"architecture='resnet': expected one of \['xvector', "):
        train_embedding(tiny_protocol, architecture="resnet")
    with pytest.raises(ValueError, match="dimension=128: architecture='wespeaker-resnet34' has "
                                         "256 dimensions only"):
        train_embedding(tiny_protocol, architecture="wespeaker-resnet34", dimension=128)
