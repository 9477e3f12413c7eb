"""Every clustering of pyannote 4.0.7 runs with a pruned WavLMSegmentation, offline."""

import numpy as np
import pytest
import torch
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import assert_same_diarization, pyannote_s_own, tiny_model
from pyannote.audio.core.plda import PLDA
from pyannote.audio.sample import SAMPLE_FILE
from pyannote.core import Annotation, Segment, Timeline

from pyannote_wavlm_prune.pipelines import (
    SpeakerDiarization,
    StoredPLDA,
    estimate_plda,
    speaker_embeddings,
)
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.plda import _RIDGE, _scatter

REFERENCE_SPEAKERS = ["speaker90", "speaker91"]
EXCERPT = Segment(0.0, 15.0)  # both speakers of pyannote's sample talk in its first 15 s


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)  # set up before the autouse seed of each test: seeded here
    model = tiny_model(duration=5.0, structure=PRUNED)
    assert model.structure.kept_heads == ((0, 2), (1,))
    return model


@pytest.fixture(scope="module")
def embedding():
    return untrained_embedding(dimension=32)


def sample_file(reference: bool = True) -> dict:
    """The first 15 s of pyannote's sample file, in memory (a fresh dict for each call)."""
    file = {
        "uri": "sample",
        "waveform": SAMPLE_FILE["waveform"][:, : int(EXCERPT.end * 16000)],
        "sample_rate": 16000,
    }
    if reference:
        file["annotation"] = SAMPLE_FILE["annotation"].crop(EXCERPT)
        file["annotated"] = Timeline([EXCERPT])
    return file


def test_oracle_clustering_needs_no_embedding_and_finds_the_reference_speakers(pruned):
    pipeline = SpeakerDiarization(segmentation=pruned, clustering="OracleClustering", **FAST)
    pipeline.instantiate(pipeline.default_parameters())
    output = pipeline(sample_file())
    assert sorted(output.speaker_diarization.labels()) == REFERENCE_SPEAKERS
    assert output.speaker_embeddings is None


def test_oracle_clustering_with_an_embedding_returns_one_embedding_per_speaker(pruned, embedding):
    pipeline = SpeakerDiarization(
        segmentation=pruned, embedding=embedding, clustering="OracleClustering", **FAST
    )
    pipeline.instantiate(pipeline.default_parameters())
    output = pipeline(sample_file())
    assert sorted(output.speaker_diarization.labels()) == REFERENCE_SPEAKERS
    assert output.speaker_embeddings.shape == (2, 32)


def test_agglomerative_clustering_runs_as_pyannote_s_and_follows_its_threshold(pruned,
                                                                              embedding):
    pipeline = SpeakerDiarization(segmentation=pruned, embedding=embedding, **FAST)
    clustering = {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7}
    pipeline.instantiate({"segmentation": {"min_duration_off": 0.0}, "clustering": clustering})
    output = pipeline(sample_file())
    assert_same_diarization(output, pyannote_s_own(pipeline)(sample_file()))
    assert output.speaker_embeddings.shape == (len(output.speaker_diarization.labels()), 32)
    assert output.speaker_diarization.get_timeline().extent().end <= EXCERPT.end + 1e-6
    # unit vectors are at most 2 apart, and so are their centroids: 2 merges every cluster
    pipeline.instantiate({"segmentation": {"min_duration_off": 0.0},
                          "clustering": {**clustering, "threshold": 2.0}})
    output = pipeline(sample_file(reference=False))
    # one cluster: one speaker at a time (where two overlap, pyannote pads a second one)
    assert output.exclusive_speaker_diarization.labels() == ["SPEAKER_00"]


def test_kmeans_clustering_finds_the_requested_number_of_speakers(pruned, embedding):
    pipeline = SpeakerDiarization(
        segmentation=pruned, embedding=embedding, clustering="KMeansClustering", **FAST
    )
    pipeline.instantiate(pipeline.default_parameters())
    output = pipeline(sample_file(reference=False), num_speakers=2)
    assert output.speaker_diarization.labels() == ["SPEAKER_00", "SPEAKER_01"]


def test_vbx_clustering_runs_with_a_plda_estimated_from_the_project_data(
    pruned, embedding, tiny_protocol
):
    train = list(tiny_protocol.train())[:3]
    vectors, labels = speaker_embeddings(embedding, train)
    plda = estimate_plda(vectors, labels)
    assert vectors.shape[1] == 32
    assert plda.dimension == len(set(labels)) - 1  # LDA: at most num_speakers - 1 directions

    pipeline = SpeakerDiarization(
        segmentation=pruned, embedding=embedding, plda=plda, clustering="VBxClustering", **FAST
    )
    pipeline.instantiate(pipeline.default_parameters())
    output = pipeline(sample_file())
    assert_same_diarization(output, pyannote_s_own(pipeline)(sample_file()))
    assert output.speaker_embeddings.shape == (len(output.speaker_diarization.labels()), 32)


def test_default_parameters_instantiate_every_clustering(pruned, embedding):
    plda = synthetic_plda()
    expected = {
        "AgglomerativeClustering": {"method", "min_cluster_size", "threshold"},
        "KMeansClustering": set(),
        "VBxClustering": {"threshold", "Fa", "Fb"},
        "OracleClustering": set(),
    }
    for clustering, names in expected.items():
        pipeline = SpeakerDiarization(
            segmentation=pruned,
            embedding=embedding,
            plda=plda if clustering == "VBxClustering" else None,
            clustering=clustering,
        )
        pipeline.instantiate(pipeline.default_parameters())
        assert pipeline.instantiated
        assert set(pipeline.parameters(instantiated=True)["clustering"]) == names


def test_clusterings_other_than_oracle_refuse_to_run_without_embedding(pruned):
    with pytest.raises(ValueError, match="'AgglomerativeClustering' needs embedding"):
        SpeakerDiarization(segmentation=pruned)
    with pytest.raises(ValueError, match="clustering='Spectral': expected one of"):
        SpeakerDiarization(segmentation=pruned, clustering="Spectral")


def test_keyword_arguments_carried_by_the_file_are_not_passed_twice(pruned, embedding):
    # pyannote.pipeline's Optimizer calls pipeline(file, **file["pipeline_kwargs"]), and
    # pyannote.audio's __call__ adds file["pipeline_kwargs"] again
    pipeline = SpeakerDiarization(
        segmentation=pruned, embedding=embedding, clustering="KMeansClustering", **FAST
    )
    pipeline.instantiate(pipeline.default_parameters())
    file = {**sample_file(reference=False), "pipeline_kwargs": {"num_speakers": 2}}
    output = pipeline(file, **file["pipeline_kwargs"])
    assert len(output.speaker_diarization.labels()) == 2
    with pytest.raises(ValueError, match="num_speakers=3 contradicts"):
        pipeline(file, num_speakers=3)


def test_pipeline_returns_a_bare_annotation_while_optimized(pruned):
    pipeline = SpeakerDiarization(segmentation=pruned, clustering="OracleClustering", **FAST)
    pipeline.instantiate(pipeline.default_parameters())
    expected = pipeline(sample_file()).speaker_diarization
    pipeline.training = True
    bare = pipeline(sample_file())
    assert isinstance(bare, Annotation) and bare == expected


# --- PLDA estimation -------------------------------------------------------------------


def gaussian_speakers(num_speakers=6, per_speaker=40, dimension=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(num_speakers, dimension))
    vectors = np.concatenate([c + rng.normal(size=(per_speaker, dimension)) for c in centres])
    labels = [f"spk{k}" for k in range(num_speakers) for _ in range(per_speaker)]
    return vectors, labels


def synthetic_plda() -> StoredPLDA:
    return estimate_plda(*gaussian_speakers(dimension=32))


def test_estimated_plda_makes_within_speaker_covariance_identity_and_between_diagonal(tmp_path):
    vectors, labels = gaussian_speakers()
    estimate_plda(vectors, labels, lda_dimension=5, directory=tmp_path)
    # read back by pyannote's own PLDA, the way VBxClustering uses it
    plda = PLDA(tmp_path / "xvec_transform.npz", tmp_path / "plda.npz")
    features = plda(vectors)
    assert features.shape == (240, 5)
    within, between = _scatter(features, np.repeat(np.arange(6), 40))
    # float64: what remains is the ridge (_RIDGE of the mean variance) added before whitening
    np.testing.assert_allclose(within, np.eye(5), atol=10 * _RIDGE)
    np.testing.assert_allclose(between, np.diag(plda.phi), atol=10 * _RIDGE * plda.phi[0])
    assert np.all(np.diff(plda.phi) < 0)  # sorted, most discriminant first


def test_stored_plda_round_trips_through_its_files(tmp_path):
    vectors, labels = gaussian_speakers()
    plda = estimate_plda(vectors, labels)
    loaded = StoredPLDA.load(plda.save(tmp_path / "plda"))
    # the same float64 arrays, saved and read back, and the same arithmetic: exact
    np.testing.assert_array_equal(loaded(vectors), plda(vectors))
    np.testing.assert_array_equal(loaded.phi, plda.phi)


def test_estimate_plda_refuses_more_lda_dimensions_than_speakers_minus_one():
    vectors, labels = gaussian_speakers(num_speakers=4)
    with pytest.raises(ValueError, match=r"lda_dimension=4: expected 1 <= lda_dimension <= 3"):
        estimate_plda(vectors, labels, lda_dimension=4)
    with pytest.raises(ValueError, match="1 speaker in labels"):
        estimate_plda(vectors, ["same"] * len(labels))
