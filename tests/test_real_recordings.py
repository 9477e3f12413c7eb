"""Real recordings with real references (tests/data/real): the references match the audio,
and on them our pipeline gives pyannote 4.0.7's own class's diarization, segment for segment,
with per-chunk embeddings skipping what real silence leaves inactive."""

from __future__ import annotations

import numpy as np
import pytest
from diarizen_cases import read_wav
from diarizen_helpers import TINY_BACKEND, TINY_PRUNED, write_hub
from helpers import (
    EMBEDDING_RTOL,
    assert_same_diarization,
    count_frame_wise_passes,
    diarize_and_watch,
    pyannote_s_own,
)
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate
from real_recordings import (
    DATA,
    RECORDINGS,
    SAMPLE_RATE,
    STEP,
    audio_path,
    contrast,
    log_energy,
    real_files,
    speech_mask,
)

from pyannote_wavlm_prune.models.loading import checkpoints_trusted
from pyannote_wavlm_prune.pipelines import SpeakerDiarization
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

SEGMENTATION_3_0 = DATA / "pyannote-segmentation-3.0"
SPEAKERS = {"dev01": 2, "tst01": 4, "trn04": 3, "EN2002a_30s": 4}
AGGLOMERATIVE = {"segmentation": {"min_duration_off": 0.0},
                 "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7}}


@pytest.fixture(scope="module")
def files() -> list[dict]:
    return real_files()


def samples_of(uri: str) -> np.ndarray:
    """The recording's samples, mono, in [-1, 1)."""
    return read_wav(audio_path(uri))[:, 0] / 32768


def test_the_protocol_gives_four_30_s_recordings_with_their_references(files):
    assert [file["uri"] for file in files] == list(RECORDINGS)
    for file in files:
        samples = read_wav(audio_path(file["uri"]))
        assert samples.shape[1] == 1 and len(samples) / SAMPLE_RATE == pytest.approx(30.0, abs=1e-4)
        assert file["annotated"].extent() == Segment(0.0, 30.0)
        assert len(file["annotation"].labels()) == SPEAKERS[file["uri"]]


def test_en2002a_reference_has_the_turns_diarizen_s_readme_prints_for_its_example(files):
    """DiariZen's README, for example/EN2002a_30s.wav: start=0.0s stop=2.7s, 0.8s-13.6s,
    5.8s-6.4s (its model's output, printed to 0.1 s)."""
    reference = files[RECORDINGS.index("EN2002a_30s")]["annotation"]
    turns = [(segment.start, segment.end) for segment in reference.itersegments()]
    for start, end in ((0.0, 2.7), (0.8, 13.6), (5.8, 6.4)):
        assert min(max(abs(start - s), abs(end - e)) for s, e in turns) <= 0.1


@pytest.mark.parametrize("uri", RECORDINGS)
def test_each_reference_has_its_speech_where_the_audio_is_loud(files, uri):
    """Reference speech is at least 10 dB louder than reference silence (11.2 to 26.4 dB
    measured), less so with the reference 0.3 s earlier or later, and at least 5 dB less with
    it 1 s earlier or later (6.7 to 9.8 dB less measured): the stored alignment (EN2002a_30s:
    184.32 s into the meeting) is the audio's."""
    reference = files[RECORDINGS.index(uri)]["annotation"]
    energy = log_energy(samples_of(uri))
    second = round(1.0 / STEP)
    # the reference's mask from 1 s before the file to 1 s after: element k of the contrast
    # is the reference moved by k * STEP - 1 s
    mask = speech_mask(((s.start, s.end) for s in reference.itersegments()),
                       len(energy) + 2 * second, start=-1.0)
    by_offset = contrast(energy, mask)
    aligned = by_offset[second]
    assert aligned >= 10.0
    for seconds in (-0.3, 0.3):
        assert by_offset[second + round(seconds / STEP)] < aligned
    assert max(by_offset[0], by_offset[2 * second]) <= aligned - 5.0


def shifted(annotation: Annotation, seconds: float) -> Annotation:
    moved = Annotation(uri=annotation.uri)
    for segment, track, label in annotation.itertracks(yield_label=True):
        moved[Segment(segment.start + seconds, segment.end + seconds), track] = label
    return moved.crop(Segment(0.0, 30.0))


def test_pyannote_s_segmentation_3_0_scores_best_with_the_stored_en2002a_offset(files):
    """pyannote/segmentation-3.0 alone (oracle clustering), loaded untrusted: DER 21.8 % on
    EN2002a_30s with its reference, 28.9 to 47.9 % with it 0.3 or 1 s earlier or later."""
    assert not checkpoints_trusted()
    pipeline = SpeakerDiarization(segmentation=str(SEGMENTATION_3_0), clustering="OracleClustering",
                                  segmentation_step=0.5, segmentation_batch_size=32)
    pipeline.instantiate({"segmentation": {"min_duration_off": 0.0}, "clustering": {}})
    file = files[RECORDINGS.index("EN2002a_30s")]
    hypothesis = pipeline(dict(file)).speaker_diarization
    metric = DiarizationErrorRate()

    def der(reference: Annotation) -> float:
        # oracle clustering names the hypothesis' speakers after the reference it was given
        return metric(reference, hypothesis.rename_labels(
            dict(zip(file["annotation"].labels(), reference.labels()))), uem=file["annotated"])

    aligned = der(file["annotation"])
    assert aligned <= 0.25
    for seconds in (-1.0, -0.3, 0.3, 1.0):
        assert der(shifted(file["annotation"], seconds)) >= aligned + 0.05, seconds


@pytest.fixture(scope="module")
def trained_wavlm(tmp_path_factory):
    """The project's WavLMSegmentation of tests/data/diarizen/trained.pt (DiariZen's
    architecture, pruned, fine-tuned on simulated conversations), 8 s windows (its chunk_size)."""
    import torch

    from pyannote_wavlm_prune.importers.diarizen import diarizen_model, read_diarizen_config

    hub = tmp_path_factory.mktemp("trained")
    state = torch.load(DATA / "diarizen" / "trained.pt", map_location="cpu")
    write_hub(hub, TINY_PRUNED, backend=TINY_BACKEND, state=state)
    return diarizen_model(state, read_diarizen_config(hub)["model"]["args"], structure=TINY_PRUNED)


# segmentation -> (its pipeline's models, the recordings it diarizes, whether some of its chunks
# are silent): pyannote's PyanNet as the hub serves it, on all four (trn04 starts with 14 s of
# silence: one of its chunks has no active speaker); the project's WavLM, trained on simulated
# conversations, on the sparsest and the densest (it hears someone in every chunk). Both with
# the project's x-vector (random weights): with WeSpeaker's ResNet34, pyannote's path (one pass
# per (chunk, speaker)) took 139 s on the four recordings here.
PIPELINES = {
    "pyannote/segmentation-3.0": (lambda request: str(SEGMENTATION_3_0), RECORDINGS, True),
    "trained-wavlm": (lambda request: request.getfixturevalue("trained_wavlm"),
                      ("tst01", "EN2002a_30s"), False),
}


@pytest.mark.parametrize("segmentation", list(PIPELINES))
def test_our_pipeline_gives_pyannote_s_diarization_on_real_recordings(files, segmentation,
                                                                       request):
    model, uris, silent_chunks = PIPELINES[segmentation]
    ours = SpeakerDiarization(segmentation=model(request), embedding=untrained_embedding(),
                              clustering="AgglomerativeClustering", segmentation_step=0.5,
                              segmentation_batch_size=32, embedding_batch_size=32)
    ours.instantiate(AGGLOMERATIVE)
    assert ours.embedding_path == "per-chunk"
    theirs = pyannote_s_own(ours)
    passes = count_frame_wise_passes(ours.embedding)
    chunks = active_chunks = inactive_pairs = pairs = 0
    for file in (file for file in files if file["uri"] in uris):
        del passes[:]
        output, seen = diarize_and_watch(ours, file)
        ours_passes = sum(passes)
        reference, reference_seen = diarize_and_watch(theirs, file)
        assert_same_diarization(output, reference, duration=len(samples_of(file["uri"])) / SAMPLE_RATE,
                                embedding_rtol=EMBEDDING_RTOL)
        # every (chunk, speaker) embedding, those of inactive speakers included
        embeddings, reference_embeddings = seen["embeddings"], reference_seen["embeddings"]
        scale = np.abs(reference_embeddings).max()
        assert np.abs(embeddings - reference_embeddings).max() <= EMBEDDING_RTOL * scale
        # one frame-wise pass per chunk where someone speaks, none for the silent chunks
        active = np.any(seen["segmentation"].data > 0, axis=1)  # (chunks, speakers)
        assert ours_passes == int(np.sum(np.any(active, axis=1)))
        chunks += len(active)
        active_chunks += int(np.sum(np.any(active, axis=1)))
        inactive_pairs += int(np.sum(~active))
        pairs += active.size
    # real silence: speakers silent in many chunks (a fifth or more of the (chunk, speaker)
    # pairs: 29 to 48 % measured), whole chunks silent in a few
    assert inactive_pairs >= pairs / 5
    assert (active_chunks < chunks) == silent_chunks
