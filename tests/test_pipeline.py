"""WavLMSegmentation inside pyannote's SpeakerDiarization pipeline, fully offline."""

import pytest
from helpers import assert_same_diarization, pyannote_s_own, tiny_model
from pyannote.audio.models.embedding import XVectorMFCC
from pyannote.audio.sample import SAMPLE_FILE

from pyannote_wavlm_prune.pipelines import SpeakerDiarization

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


def test_pipeline_diarizes_pyannote_sample_file_offline_as_pyannote_s_own_class():
    pipeline = SpeakerDiarization(
        segmentation=tiny_model(duration=5.0),
        embedding=XVectorMFCC().eval(),  # random weights: the hub is out of reach
        clustering="AgglomerativeClustering",
        segmentation_step=0.5,
    )
    pipeline.instantiate(AGGLOMERATIVE)
    output = pipeline(SAMPLE_FILE)
    assert output.speaker_diarization.uri == "sample"
    extent = output.speaker_diarization.get_timeline().extent()
    assert 0.0 <= extent.start and extent.end <= 30.0 + 1e-6
    assert_same_diarization(output, pyannote_s_own(pipeline)(SAMPLE_FILE))


def test_vbx_clustering_without_plda_is_refused():
    with pytest.raises(ValueError, match="VBxClustering' needs plda"):
        SpeakerDiarization(segmentation=tiny_model(), embedding=XVectorMFCC(), clustering="VBxClustering")


def test_pyannote_sample_read_without_a_decoder_equals_pyannote_s_own():
    import torch

    from pyannote_wavlm_prune.pipelines.bench import pyannote_sample

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

    from pyannote_wavlm_prune.pipelines.embedding import untrained_embedding
    from pyannote_wavlm_prune.pipelines.offline import NoPLDA

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
