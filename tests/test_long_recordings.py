"""Long recordings: the clusterings are pyannote's below MAX_CLUSTERED embeddings, an evenly
spaced subset past it, with memory that grows linearly with the number of embeddings."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from pyannote.audio.pipelines.clustering import AgglomerativeClustering as PyannoteAHC
from pyannote.audio.pipelines.clustering import KMeansClustering as PyannoteKMeans
from pyannote.audio.pipelines.clustering import VBxClustering as PyannoteVBx
from scipy.optimize import linear_sum_assignment

from pyannote_wavlm_prune.pipelines.clustering import (
    MAX_CLUSTERED,
    AgglomerativeClustering,
    KMeansClustering,
    VBxClustering,
    evenly_spaced,
)
from pyannote_wavlm_prune.pipelines.synthetic import synthetic_plda, synthetic_recording

DIMENSION = 32  # small embeddings: fast tests, the same arithmetic
VBX = {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
AHC = {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7045654963945799}


@pytest.fixture(scope="module")
def plda():
    return synthetic_plda(dimension=DIMENSION, num_speakers=40)


def pair(name, plda, **parameters):
    """Ours and pyannote's clustering `name`, instantiated alike."""
    if name == "VBxClustering":
        ours, theirs = VBxClustering(plda), PyannoteVBx(plda)
        parameters = {**VBX, **parameters}
    elif name == "KMeansClustering":
        ours, theirs = KMeansClustering(), PyannoteKMeans()
    else:
        ours, theirs = AgglomerativeClustering(), PyannoteAHC()
        parameters = {**AHC, **parameters}
    return ours.instantiate(parameters), theirs.instantiate(parameters)


def cluster(clustering, recording):
    num_clusters = 5 if isinstance(clustering, PyannoteKMeans) else None
    embeddings = recording.embeddings.copy()  # pyannote's AHC normalises its input in place
    return clustering(embeddings=embeddings, segmentations=recording.segmentations,
                      num_clusters=num_clusters, min_clusters=1, max_clusters=np.inf)


def with_ties(recording):
    """`recording` whose every other chunk repeats the embeddings of the chunk before it:
    equal embeddings, zero distances, tied merges."""
    recording.embeddings[1::2] = recording.embeddings[:-1:2][: len(recording.embeddings[1::2])]
    return recording


@pytest.mark.parametrize("name, parameters", [
    ("VBxClustering", {}),
    ("AgglomerativeClustering", {}),
    ("AgglomerativeClustering", {"method": "average", "min_cluster_size": 2}),
    ("KMeansClustering", {}),
])
@pytest.mark.parametrize("minutes, ties", [(2, False), (10, False), (10, True)])
def test_below_the_limit_every_clustering_is_pyannote_s_exactly(plda, name, parameters, minutes,
                                                                ties):
    recording = synthetic_recording(minutes * 60, dimension=DIMENSION, seed=minutes)
    if ties:
        recording = with_ties(recording)
    ours, theirs = pair(name, plda, **parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no approximation below the limit, so no warning
        hard, soft, centroids = cluster(ours, recording)
    expected_hard, expected_soft, expected_centroids = cluster(theirs, recording)
    assert np.array_equal(hard, expected_hard)
    assert np.array_equal(soft, expected_soft)
    assert np.array_equal(centroids, expected_centroids)
    assert len(np.unique(hard[hard >= 0])) >= 2  # a real clustering, not a single cluster


def test_evenly_spaced_indices_keep_the_limit_and_both_ends():
    assert evenly_spaced(5, None).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(5, 5).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    kept = evenly_spaced(25_001, 10_000)
    assert len(kept) == 10_000 and kept[0] == 0 and kept[-1] == 25_000
    assert set(np.diff(kept).tolist()) == {2, 3}
    assert len(evenly_spaced(MAX_CLUSTERED + 1, MAX_CLUSTERED)) == MAX_CLUSTERED


def agreement(hard, reference, active):
    """Share of active (chunk, speaker) pairs whose cluster matches the reference's, under
    the best one-to-one mapping of cluster labels."""
    hard, reference = hard[active], reference[active]
    labels, truth = np.unique(hard), np.unique(reference)
    counts = np.array([[np.sum((hard == a) & (reference == b)) for b in truth] for a in labels])
    rows, columns = linear_sum_assignment(counts, maximize=True)
    return counts[rows, columns].sum() / len(hard)


@pytest.mark.parametrize("name", ["VBxClustering", "AgglomerativeClustering"])
def test_past_the_limit_a_subset_is_clustered_says_so_once_and_agrees_with_the_exact_one(
        plda, name):
    recording = synthetic_recording(20 * 60, dimension=DIMENSION, seed=3)
    subset, exact = pair(name, plda)[0], pair(name, plda)[0]
    subset.max_clustered, exact.max_clustered = 400, None
    with pytest.warns(UserWarning) as caught:
        hard, _, centroids = cluster(subset, recording)
    said = [w for w in caught if "evenly spaced in time" in str(w.message)]
    assert len(said) == 1
    num_embeddings = int(str(said[0].message).split(": ")[1].split()[0])
    assert num_embeddings > 3 * 400  # the limit was passed by far
    assert "clustering 400 of them" in str(said[0].message)
    expected, _, _ = cluster(exact, recording)
    active = np.sum(recording.segmentations.data, axis=1) > 0
    # the same speakers: every active pair in the same cluster as the exact path puts it,
    # but for a few of those the two paths' centroids are equally close to
    assert agreement(hard, expected, active) >= 0.995
    assert centroids.shape[0] == len(np.unique(expected[expected >= 0]))


MEMORY_SCRIPT = """
import json, sys, tracemalloc, warnings
import numpy as np
from pyannote_wavlm_prune.pipelines.clustering import AgglomerativeClustering, VBxClustering
from pyannote_wavlm_prune.pipelines.synthetic import synthetic_plda, synthetic_recording

hours, limit = float(sys.argv[1]), sys.argv[2]
recording = synthetic_recording(hours * 3600, dimension=32, seed=0)
clusterings = {
    "VBxClustering": VBxClustering(synthetic_plda(dimension=32, num_speakers=40)).instantiate(
        {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}),
    "AgglomerativeClustering": AgglomerativeClustering().instantiate(
        {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7045654963945799}),
}
measured = {"segmentations": recording.segmentations.data.nbytes,
            "pairs": recording.embeddings.shape[0] * recording.embeddings.shape[1]}
warnings.simplefilter("ignore")
tracemalloc.start()
for name, clustering in clusterings.items():
    clustering.max_clustered = None
    measured["embeddings"] = len(clustering.filter_embeddings(recording.embeddings,
                                                              recording.segmentations)[0])
    clustering.max_clustered = None if limit == "none" else int(limit)
    tracemalloc.reset_peak()
    clustering(embeddings=recording.embeddings, segmentations=recording.segmentations,
               num_clusters=None, min_clusters=1, max_clusters=np.inf)
    measured[name] = tracemalloc.get_traced_memory()[1]
print(json.dumps(measured))
"""
LIMIT = 1000


@pytest.fixture(scope="module")
def clustering_memory() -> dict:
    """Peak of the memory numpy allocates (traced) during each clustering step of a synthetic
    3-hour recording (32-dimension embeddings), with a limit of LIMIT embeddings, in a fresh
    process."""
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "3", str(LIMIT)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["VBxClustering", "AgglomerativeClustering"])
def test_memory_of_the_clustering_step_grows_linearly_past_the_limit(clustering_memory, name):
    """About 22,000 clustered embeddings: the exact computation would hold 2 GB of pairwise
    distances; past the limit, memory is the subset's (a constant) plus a few copies of the
    inputs: the segmentations (the clean-frame count) and the (chunk, speaker) embeddings and
    scores."""
    measured = clustering_memory
    n = measured["embeddings"]
    assert n > 20_000
    subset = 8 * LIMIT * LIMIT * 2  # its distances and the copy linkage makes, its VBx (n, k)
    linear = 2 * measured["segmentations"] + 8 * measured["pairs"] * (32 + 64) * 4
    assert measured[name] <= subset + linear  # 70 MB of 0.27 GB here
    assert measured[name] <= 8 * n * (n - 1) / 2 / 20  # a twentieth of the exact distances
