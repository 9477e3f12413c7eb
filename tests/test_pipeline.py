"""WavLMSegmentation inside pyannote's SpeakerDiarization pipeline, fully offline."""

import pytest
from helpers import assert_same_diarization, tiny_model
from pyannote.audio.models.embedding import XVectorMFCC
from pyannote.audio.sample import SAMPLE_FILE

from pyannote_wavlm_prune.pipelines import SpeakerDiarization

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


def test_pipeline_diarizes_pyannote_sample_file_offline_as_pyannote_s_own_class():
    from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization

    from pyannote_wavlm_prune.pipelines.parts import NoPLDA

    segmentation = tiny_model(duration=5.0)
    embedding = XVectorMFCC().eval()  # random weights: the hub is out of reach
    pipeline = SpeakerDiarization(segmentation=segmentation, embedding=embedding,
                                  clustering="AgglomerativeClustering", segmentation_step=0.5)
    pipeline.instantiate(AGGLOMERATIVE)
    output = pipeline(SAMPLE_FILE)
    assert output.speaker_diarization.uri == "sample"
    extent = output.speaker_diarization.get_timeline().extent()
    assert 0.0 <= extent.start and extent.end <= 30.0 + 1e-6
    # pyannote's class with the settings stated here, not read from the pipeline under test
    # (a setting it dropped or changed would then be the oracle's too): the same models and
    # hyper-parameters, half-window steps, overlapped speech embedded, 32 chunks and 32
    # (chunk, speaker) pairs per forward pass (the pipeline's defaults: a batch's shape
    # changes float32 sums in their last bits), no PLDA (agglomerative clustering needs none)
    theirs = PyannoteSpeakerDiarization(
        segmentation=segmentation, embedding=embedding, plda=NoPLDA(),
        clustering="AgglomerativeClustering", segmentation_step=0.5,
        embedding_exclude_overlap=False, segmentation_batch_size=32, embedding_batch_size=32,
    ).instantiate(AGGLOMERATIVE)
    assert_same_diarization(output, theirs(SAMPLE_FILE))


def test_vbx_clustering_without_plda_is_refused():
    with pytest.raises(ValueError, match="VBxClustering' needs plda"):
        SpeakerDiarization(segmentation=tiny_model(), embedding=XVectorMFCC(), clustering="VBxClustering")


def test_pyannote_sample_read_without_a_decoder_equals_pyannote_s_own():
    import torch

    from pyannote_wavlm_prune.pipelines.segmentation_bench import pyannote_sample

    sample = pyannote_sample()
    assert sample["sample_rate"] == SAMPLE_FILE["sample_rate"] == 16000
    assert sample["waveform"].shape == SAMPLE_FILE["waveform"].shape == (1, 480000)
    # 16-bit samples over 32768: exact in float32, whichever decoder reads them
    assert torch.equal(sample["waveform"], SAMPLE_FILE["waveform"])


def test_no_turn_ends_after_the_file_does():
    """pyannote's class pads the last chunk and leaves its turns past the end (3.99 s here)."""
    import torch
    from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization
    from pyannote.core import Segment

    from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
    from pyannote_wavlm_prune.pipelines.parts import NoPLDA

    torch.manual_seed(0)
    shared = {"segmentation": tiny_model(duration=2.0), "embedding": untrained_embedding(),
              "segmentation_step": 0.5, "clustering": "AgglomerativeClustering"}
    short = {"uri": "short", "waveform": SAMPLE_FILE["waveform"][:, :52800], "sample_rate": 16000}
    parameters = {**AGGLOMERATIVE, "clustering": {**AGGLOMERATIVE["clustering"], "min_cluster_size": 1}}
    ours = SpeakerDiarization(**shared).instantiate(parameters)(dict(short))
    theirs = PyannoteSpeakerDiarization(plda=NoPLDA(), **shared).instantiate(parameters)(dict(short))
    assert theirs.speaker_diarization.get_timeline().extent().end > 3.9
    for annotation in (ours.speaker_diarization, ours.exclusive_speaker_diarization):
        assert annotation.get_timeline().extent() == Segment(
            theirs.speaker_diarization.get_timeline().extent().start, 3.3)
    # the rest is pyannote's output, cropped
    assert ours.speaker_diarization == theirs.speaker_diarization.crop(Segment(0, 3.3), mode="intersection")


# ---------------------------------------------------- pyannote's batch convention (4.0.7)

@pytest.fixture(scope="module")
def batch_pipeline():
    import torch

    from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

    torch.manual_seed(0)
    pipeline = SpeakerDiarization(segmentation=tiny_model(duration=2.0),
                                  embedding=untrained_embedding(), segmentation_step=0.5,
                                  clustering="AgglomerativeClustering")
    return pipeline.instantiate(AGGLOMERATIVE)


def excerpts():
    """Three different excerpts of pyannote's sample, as in-memory files."""
    waveform = SAMPLE_FILE["waveform"]
    return [{"uri": f"excerpt-{start}", "sample_rate": 16000,
             "waveform": waveform[:, start * 16000:(start + length) * 16000]}
            for start, length in ((0, 12), (9, 8), (17, 13))]


def test_a_list_of_files_gives_what_each_file_gives_alone(batch_pipeline):
    alone = [batch_pipeline(dict(file)) for file in excerpts()]
    together = list(batch_pipeline(excerpts()))
    assert [file["uri"] for file, _ in together] == [file["uri"] for file in excerpts()]
    for (_, output), expected in zip(together, alone, strict=True):
        assert_same_diarization(output, expected)
    # not the same output thrice: the files differ
    assert alone[0].speaker_diarization != alone[1].speaker_diarization


def test_a_batch_passes_the_speaker_counts_on_and_reports_or_yields_a_failure(batch_pipeline):
    import torch

    files = excerpts()
    counted = dict(files[0], pipeline_kwargs={"num_speakers": 1})
    expected = batch_pipeline(dict(files[0]), num_speakers=1)
    broken = {"uri": "broken", "sample_rate": 16000,
              "waveform": torch.full((1, 32000), float("nan"))}
    with pytest.raises(ValueError, match="NaN or infinite samples"):
        list(batch_pipeline([counted, broken, files[1]]))
    results = list(batch_pipeline.apply_batch([counted, broken, files[1]], errors="yield"))
    assert [file["uri"] for file, _ in results] == ["excerpt-0", "broken", "excerpt-9"]
    assert results[0][1].speaker_diarization == expected.speaker_diarization
    assert len(results[0][1].speaker_diarization.labels()) == 1
    assert isinstance(results[1][1], ValueError) and "NaN" in str(results[1][1])
    assert_same_diarization(results[2][1], batch_pipeline(dict(files[1])))
    with pytest.raises(ValueError, match="errors='skip': expected 'raise' or 'yield'"):
        list(batch_pipeline.apply_batch(files, errors="skip"))
