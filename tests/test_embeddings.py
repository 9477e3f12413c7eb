"""Speaker embeddings once per chunk: the same diarization as pyannote's path, fewer passes."""

import warnings

import numpy as np
import pytest
import torch
from helpers import EMBEDDING_RTOL, count_frame_wise_passes, diarize, random_wespeaker
from pyannote.audio.models.embedding import XVectorMFCC as PyannoteXVectorMFCC
from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization
from pyannote.audio.sample import SAMPLE_FILE
from pyannote.core import SlidingWindow, SlidingWindowFeature

from pyannote_wavlm_prune.frontends.presets import tiny_config
from pyannote_wavlm_prune.models.wavlm_segmentation import WavLMSegmentation
from pyannote_wavlm_prune.pipelines import SpeakerDiarization
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.parts import NoPLDA
from pyannote_wavlm_prune.recipe.training import diarization_task, trainer

AGGLOMERATIVE = {"segmentation": {"min_duration_off": 0.0},
                 "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7}}


@pytest.fixture(scope="module")
def segmentation(tiny_protocol, tmp_path_factory):
    """A tiny WavLMSegmentation trained 40 steps: local speakers that are silent in some chunks,
    active in others, overlapping in a few (a random model is one class almost everywhere)."""
    directory = tmp_path_factory.mktemp("segmentation")
    task = diarization_task(tiny_protocol, duration=2.0, batch_size=8, cache_dir=directory,
                            max_speakers_per_chunk=3)
    model = WavLMSegmentation(wavlm=tiny_config(), task=task,
                              conformer={"num_layers": 1, "ffn_dim": 64, "num_heads": 2})
    model.prepare_data()
    model.setup()
    trainer(max_steps=40, limit_val_batches=0, default_root_dir=directory, progress=False).fit(model)
    return model.eval()


@pytest.fixture(scope="module")
def wespeaker():
    """pyannote's WeSpeaker ResNet34 (the embedding of its hub pipelines), random weights."""
    return random_wespeaker()


def with_a_pause(file: dict, at: float = 10.0, pause: float = 6.0) -> dict:
    """`file` (pyannote's sample) with `pause` seconds of silence inserted at `at` seconds."""
    waveform, rate = file["waveform"], file["sample_rate"]
    cut = int(at * rate)
    silence = torch.zeros(waveform.shape[0], int(pause * rate))
    return {"uri": "sample-with-a-pause", "sample_rate": rate,
            "waveform": torch.cat([waveform[:, :cut], silence, waveform[:, cut:]], dim=1)}


PAUSED = with_a_pause(SAMPLE_FILE)


def pipelines(segmentation, embedding, clustering="AgglomerativeClustering", **options):
    """(ours, pyannote 4.0.7's own class) with the same models, parameters and batch sizes."""
    shared = {"segmentation": segmentation, "embedding": embedding, "clustering": clustering,
              "segmentation_step": 0.5, "embedding_batch_size": 8, "segmentation_batch_size": 8,
              **options}
    ours = SpeakerDiarization(**shared)
    theirs = PyannoteSpeakerDiarization(plda=NoPLDA(), **shared)
    parameters = AGGLOMERATIVE if clustering == "AgglomerativeClustering" else {
        "segmentation": {"min_duration_off": 0.0}, "clustering": {}}
    for pipeline in (ours, theirs):
        pipeline.instantiate(parameters)
    return ours, theirs


@pytest.mark.parametrize("exclude_overlap", [False, True])
def test_a_real_recording_gets_pyannote_s_diarization_with_one_pass_per_active_chunk(
        segmentation, wespeaker, exclude_overlap):
    ours, theirs = pipelines(segmentation, wespeaker, embedding_exclude_overlap=exclude_overlap)
    assert ours.embedding_path == "per-chunk"
    calls = count_frame_wise_passes(wespeaker)
    try:
        diarization, embeddings = diarize(ours, PAUSED)
    finally:
        del wespeaker.forward_frames
    reference, reference_embeddings = diarize(theirs, PAUSED)
    # every segment and label
    assert list(diarization.itertracks(yield_label=True)) == list(
        reference.itertracks(yield_label=True))
    assert len(reference.labels()) >= 2
    scale = np.abs(reference_embeddings).max()
    assert np.abs(embeddings - reference_embeddings).max() <= EMBEDDING_RTOL * scale
    # a speaker without an active frame has the embedding of zero statistics (ResNet34's
    # last layer's bias); the others, one frame-wise pass per chunk
    silent = np.all(reference_embeddings == wespeaker.resnet.seg_1.bias.detach().numpy(), axis=2)
    active_chunks = int(np.sum(~np.all(silent, axis=1)))
    assert sum(calls) == active_chunks and all(batch <= 8 for batch in calls)
    # what the segmentation gives: silent chunks, and silent speakers in active chunks
    assert active_chunks < len(silent) and np.sum(silent) > 2 * (len(silent) - active_chunks)


def test_oracle_clustering_gives_the_same_diarization_and_embeddings(segmentation, wespeaker):
    ours, theirs = pipelines(segmentation, wespeaker, clustering="OracleClustering")
    # pyannote's class crashes with OracleClustering (it sets up no embedding): give it ours
    theirs._embedding, theirs._audio = ours._embedding, ours._audio
    diarization, embeddings = diarize(ours, SAMPLE_FILE)
    reference, reference_embeddings = diarize(theirs, SAMPLE_FILE)
    assert len(reference.labels()) == 2  # the reference's speakers
    assert list(diarization.itertracks(yield_label=True)) == list(
        reference.itertracks(yield_label=True))
    scale = np.abs(reference_embeddings).max()
    assert np.abs(embeddings - reference_embeddings).max() <= EMBEDDING_RTOL * scale


def crafted_segmentations(num_frames: int = 50) -> SlidingWindowFeature:
    """(5 chunks, frames, 3 speakers) binary masks of every case pyannote's path handles."""
    data = np.zeros((5, num_frames, 3))
    data[0, :, 0] = 1                      # one speaker throughout
    data[0, 10:14, 1] = 1                  # and one only while overlapping: clean part empty
    # chunk 1: nobody speaks
    data[2, :30, 1] = 1                    # a turn change, no overlap
    data[2, 30:, 2] = 1
    data[2, 40:, 0] = np.nan               # partial stitching
    data[3, 5:45, 0] = data[3, 20:25, 2] = 1  # overlap long enough to leave a clean part
    data[4, :2, 1] = 1                     # too short a clean part: the whole mask
    data[4, :2, 2] = 1
    data[4, 2:, 1] = 1
    return SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=2.0, step=5.0))


@pytest.mark.parametrize("exclude_overlap", [False, True])
def test_masks_nan_and_the_overlap_fall_back_are_pyannote_s_and_silent_chunks_are_skipped(
        wespeaker, exclude_overlap):
    ours = SpeakerDiarization(segmentation=_segmentation_stub(), embedding=wespeaker,
                              embedding_batch_size=2)
    segmentations = crafted_segmentations()
    file = {"uri": "sample", "waveform": SAMPLE_FILE["waveform"], "sample_rate": 16000}
    cropped = []
    crop = ours._audio.crop
    ours._audio.crop = lambda file, segment, **kw: cropped.append(segment) or crop(file, segment, **kw)
    calls = count_frame_wise_passes(wespeaker)
    try:
        embeddings = ours.get_embeddings(file, segmentations, exclude_overlap=exclude_overlap)
    finally:
        del wespeaker.forward_frames
        ours._audio.crop = crop
    reference = PyannoteSpeakerDiarization.get_embeddings(
        ours, file, segmentations, exclude_overlap=exclude_overlap)
    assert embeddings.shape == reference.shape == (5, 3, 256)
    scale = np.abs(reference).max()
    assert np.abs(embeddings - reference).max() <= EMBEDDING_RTOL * scale
    # silent speakers: exactly pyannote's value (the embedding of zero statistics)
    assert np.array_equal(embeddings[1], reference[1]) and np.array_equal(embeddings[0, 2], reference[0, 2])
    # 4 chunks with an active speaker, in batches of 2; the silent one is never read
    assert calls == [2, 2]
    assert segmentations.sliding_window[1] not in cropped and len(cropped) == 4


def _segmentation_stub():
    model = WavLMSegmentation(wavlm=tiny_config(), conformer={"num_layers": 1, "ffn_dim": 64,
                                                               "num_heads": 2})
    from helpers import powerset_specifications

    model.specifications = powerset_specifications(duration=2.0)
    model.build()
    return model.eval()


def test_a_file_with_nobody_speaking_runs_no_chunk_and_gives_pyannote_s_embeddings(wespeaker):
    ours = SpeakerDiarization(segmentation=_segmentation_stub(), embedding=wespeaker)
    segmentations = crafted_segmentations()
    segmentations.data[:] = 0
    file = {"uri": "sample", "waveform": SAMPLE_FILE["waveform"], "sample_rate": 16000}
    embeddings = ours.get_embeddings(file, segmentations)
    reference = PyannoteSpeakerDiarization.get_embeddings(ours, file, segmentations)
    assert np.array_equal(embeddings, reference)


def test_an_optimized_pipeline_reuses_its_first_embeddings(wespeaker):
    ours = SpeakerDiarization(segmentation=_segmentation_stub(), embedding=wespeaker)
    ours.instantiate(AGGLOMERATIVE)
    ours.training = True  # as pyannote.pipeline's Optimizer sets it
    file = {"uri": "sample", "waveform": SAMPLE_FILE["waveform"], "sample_rate": 16000}
    first = ours.get_embeddings(file, crafted_segmentations())
    calls = count_frame_wise_passes(wespeaker)
    try:
        again = ours.get_embeddings(file, crafted_segmentations())
    finally:
        del wespeaker.forward_frames
    assert again is first and calls == []


def test_this_project_s_xvector_takes_the_per_chunk_path_and_pyannote_s_is_announced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert SpeakerDiarization(segmentation=_segmentation_stub(),
                                  embedding=untrained_embedding()).embedding_path == "per-chunk"
    assert not [w for w in caught if "pyannote's path" in str(w.message)]
    with pytest.warns(UserWarning, match="pyannote's path.*XVectorMFCC has no forward_frames"):
        fallback = SpeakerDiarization(segmentation=_segmentation_stub(),
                                      embedding=PyannoteXVectorMFCC().eval())
    assert fallback.embedding_path == "per-pair"
    with pytest.raises(ValueError, match="chunkwise_embeddings=True, but XVectorMFCC has no"):
        SpeakerDiarization(segmentation=_segmentation_stub(), embedding=PyannoteXVectorMFCC(),
                           chunkwise_embeddings=True)
    assert SpeakerDiarization(segmentation=_segmentation_stub(), embedding=untrained_embedding(),
                              chunkwise_embeddings=False).embedding_path == "per-pair"


def test_a_model_whose_split_computes_something_else_keeps_pyannote_s_path():
    model = untrained_embedding()
    model.forward_embedding = lambda frames, weights=None: torch.zeros(
        frames.shape[0], weights.shape[1], 128)
    with pytest.warns(UserWarning, match="do not compute its forward"):
        pipeline = SpeakerDiarization(segmentation=_segmentation_stub(), embedding=model)
    assert pipeline.embedding_path == "per-pair"


def test_the_pipeline_without_embedding_has_no_embedding_path():
    pipeline = SpeakerDiarization(segmentation=_segmentation_stub(), clustering="OracleClustering")
    assert pipeline.embedding_path is None
