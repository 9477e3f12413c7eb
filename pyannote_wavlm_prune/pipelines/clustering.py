"""pyannote 4's clusterings, with the options under which they compute DiariZen's.

DiariZen (BUT-FIT's diarization, on its own fork of pyannote 3.1) clusters as pyannote 4.0.7
does but for a few rules, each an option here; every default is pyannote 4's:

- `min_clean_ratio` (DiariZen: `min_frames_ratio`, 0.1; pyannote: 0.2): the share of a chunk's
  frames a local speaker must hold alone for its embedding to be clustered;
- `clean_ratio_fallback` (DiariZen: always): when fewer than two embeddings pass that rule,
  cluster every active speaker's embedding instead;
- `inactive_speakers_last` (DiariZen: `const_location=None`, i.e. False): in the
  one-speaker-per-cluster assignment, score the speakers without an active frame below every
  active one, so that they never take a cluster from an active speaker;
- `recluster_to_bounds` (DiariZen: False, its VBx ignores min/max clusters): re-cluster with
  k-means when VBx's number of clusters falls outside the speaker bounds;
- `unassigned_as_speaker` (DiariZen's VBx ends with `np.unique(hard_clusters,
  return_inverse=True)`, i.e. True): renumber the clusters so that the local speakers the
  assignment left without a cluster (-2) form one more cluster, the first, and clusters that
  no speaker was assigned to disappear. Their active frames then become an extra output
  speaker: a defect, kept only to compute what DiariZen computes.

Long files: the hierarchical clusterings (agglomerative, and the AHC that starts VBx) keep
pyannote's computation, exactly, up to `MAX_CLUSTERED` clustered embeddings (0.9 to 1.1 hours
of audio at 8 s chunks every 0.8 s), where scipy's condensed distances take 0.26 GB and VBx's
responsibilities (embeddings x AHC clusters) 0.5 GB a copy at most (every embedding a cluster
of its own). Past it, both would grow with the square of the file's length (a 4-hour file:
about 12 GB, a 6-hour one more than a 24 GB machine), so `MAX_CLUSTERED` embeddings evenly
spaced in time are clustered instead, and every embedding is then assigned to their centroids,
as pyannote assigns every embedding anyway: memory then grows linearly with the file. A warning
says so, once per file; the DER of this approximation against the exact computation is in
docs/deployment.md.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from einops import rearrange
from pyannote.audio.pipelines.clustering import AgglomerativeClustering as PyannoteAHC
from pyannote.audio.pipelines.clustering import KMeansClustering as PyannoteKMeans
from pyannote.audio.pipelines.clustering import VBxClustering as PyannoteVBx
from pyannote.audio.utils.vbx import cluster_vbx
from pyannote.core import SlidingWindowFeature
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans

# pyannote 4.0.7's BaseClustering.filter_embeddings(min_active_ratio=0.2)
PYANNOTE_MIN_CLEAN_RATIO = 0.2
UNASSIGNED = -2  # pyannote's label of a local speaker the assignment left without a cluster
# clustered embeddings up to which the hierarchical clusterings are pyannote's, exactly (see the
# module's docstring and benchmarks/bench_long_recordings.py)
MAX_CLUSTERED = 8_000

log = logging.getLogger(__name__)


def clean_frame_counts(segmentations: np.ndarray) -> np.ndarray:
    """(chunks, speakers) number of frames where each local speaker is the only one active

    segmentations : (chunks, frames, speakers) binary array.
    """
    alone = np.sum(segmentations, axis=2, keepdims=True) == 1
    return np.sum(segmentations * alone, axis=1)


class CleanFrameFilter:
    """The rule choosing which (chunk, speaker) embeddings are clustered (a mixin)."""

    min_clean_ratio: float = PYANNOTE_MIN_CLEAN_RATIO
    clean_ratio_fallback: bool = False
    # clustered embeddings at most (None: all); past it, a subset evenly spaced in time
    max_clustered: int | None = None

    def filter_embeddings(self, embeddings: np.ndarray,
                          segmentations: SlidingWindowFeature | None = None,
                          min_active_ratio: float | None = None):
        """Embeddings with enough clean frames, their chunk and speaker indices

        As pyannote's (a speaker holding at least `min_clean_ratio` of the chunk's frames
        alone, a finite embedding) and, with `clean_ratio_fallback`, DiariZen's second chance:
        every active speaker with a finite embedding when fewer than two pass. DiariZen
        rounds `min_clean_ratio * frames` to the nearest frame; the two rules agree whenever
        the ratio falls on a fraction above one half of a frame (0.1 of 799 frames, 16 s of
        WavLM frames; of 399, 8 s), and differ by one frame otherwise.
        """
        ratio = self.min_clean_ratio if min_active_ratio is None else min_active_ratio
        data = segmentations.data
        num_frames = data.shape[1]
        # an active speaker (what a ratio of 0 still asks) with a finite embedding
        candidates = (np.sum(data, axis=1) > 0) & ~np.any(np.isnan(embeddings), axis=2)
        enough = clean_frame_counts(data) >= ratio * num_frames
        chunk_idx, speaker_idx = np.where(candidates & enough)
        if self.clean_ratio_fallback and len(chunk_idx) < 2:
            chunk_idx, speaker_idx = np.where(candidates)
        kept = evenly_spaced(len(chunk_idx), self.max_clustered)
        name = type(self).__name__
        if len(kept) < len(chunk_idx):
            warnings.warn(f"{name}: {len(chunk_idx)} embeddings to cluster, more than "
                          f"{self.max_clustered} (about an hour of audio): clustering "
                          f"{len(kept)} of them evenly spaced in time, then assigning every "
                          "embedding to their centroids (an approximation whose memory grows "
                          "linearly with the file, see docs/deployment.md).", stacklevel=1)
            chunk_idx, speaker_idx = chunk_idx[kept], speaker_idx[kept]
        else:
            log.info("%s: all %d embeddings clustered (pyannote's exact computation).",
                     name, len(chunk_idx))
        return embeddings[chunk_idx, speaker_idx], chunk_idx, speaker_idx


def evenly_spaced(num_embeddings: int, limit: int | None) -> np.ndarray:
    """Indices of at most `limit` of `num_embeddings` embeddings, evenly spaced (all if fewer)

    Embeddings come chunk by chunk: evenly spaced indices are evenly spaced in time, and each
    speaker keeps its share of them. Overlapping chunks (8 s every 0.8 s) embed each turn
    about ten times, so a tenth of them still sees every turn.
    """
    if limit is None or num_embeddings <= limit:
        return np.arange(num_embeddings)
    return np.unique(np.linspace(0, num_embeddings - 1, limit).round().astype(np.int64))


class AgglomerativeClustering(CleanFrameFilter, PyannoteAHC):
    """pyannote's AgglomerativeClustering with the clean-frame options (see the module); past
    `MAX_CLUSTERED` embeddings, their clusters' centroids come from an evenly spaced subset."""

    max_clustered = MAX_CLUSTERED


class KMeansClustering(CleanFrameFilter, PyannoteKMeans):
    """pyannote's KMeansClustering with the clean-frame options (see the module)."""


class VBxClustering(CleanFrameFilter, PyannoteVBx):
    """pyannote 4.0.7's VBxClustering, with DiariZen's rules as options (see the module)

    AHC of the length-normalised embeddings (centroid linkage, distance `threshold`), VBx of
    their PLDA features (`Fa`, `Fb`, 20 iterations) started from it, one centroid per speaker
    VBx keeps, then each (chunk, speaker) goes to a centroid under the one-speaker-per-cluster
    constraint (cosine similarity). Past `MAX_CLUSTERED` embeddings, AHC and VBx run on an
    evenly spaced subset, whose centroids every embedding is then assigned to.
    """

    inactive_speakers_last: bool = True
    recluster_to_bounds: bool = True
    unassigned_as_speaker: bool = False
    max_clustered = MAX_CLUSTERED  # AHC and VBx past it: an evenly spaced subset

    def __call__(self, embeddings: np.ndarray, segmentations: SlidingWindowFeature | None = None,
                 num_clusters: int | None = None, min_clusters: int | None = None,
                 max_clusters: int | None = None, **kwargs):
        """hard_clusters (chunks, speakers), soft_clusters (chunks, speakers, clusters),
        centroids (clusters, dimension), as pyannote's VBxClustering returns them."""
        train_embeddings, _, _ = self.filter_embeddings(embeddings, segmentations=segmentations)
        num_chunks, num_speakers, dimension = embeddings.shape
        if train_embeddings.shape[0] < 2:
            # too few embeddings to cluster: one speaker (pyannote's and DiariZen's rule)
            hard_clusters = np.zeros((num_chunks, num_speakers), dtype=np.int8)
            soft_clusters = np.ones((num_chunks, num_speakers, 1))
            centroids = np.mean(train_embeddings, axis=0, keepdims=True)
            return hard_clusters, soft_clusters, centroids

        normed = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
        dendrogram = linkage(normed, method="centroid", metric="euclidean")
        ahc_clusters = fcluster(dendrogram, self.threshold, criterion="distance") - 1
        _, ahc_clusters = np.unique(ahc_clusters, return_inverse=True)
        q, sp = cluster_vbx(ahc_clusters, self.plda(train_embeddings), self.plda.phi,
                            Fa=self.Fa, Fb=self.Fb, maxIters=20)
        responsibilities = q[:, sp > 1e-7]  # the speakers VBx kept
        centroids = (responsibilities.T @ train_embeddings.reshape(-1, dimension)
                     / responsibilities.sum(0, keepdims=True).T)

        constrained = self.constrained_assignment
        if self.recluster_to_bounds:
            num_found = centroids.shape[0]
            if num_found < min_clusters:
                num_clusters = min_clusters
            elif num_found > max_clusters:
                num_clusters = max_clusters
            if num_clusters and num_clusters != num_found:
                # pyannote: the constraint could add clusters back when their number is forced
                constrained = False
                assignment = KMeans(n_clusters=num_clusters, n_init=3, random_state=42,
                                    copy_x=False).fit_predict(normed)
                centroids = np.vstack([np.mean(train_embeddings[assignment == k], axis=0)
                                       for k in range(num_clusters)])

        distance = cdist(rearrange(embeddings, "c s d -> (c s) d"), centroids, metric=self.metric)
        soft_clusters = 2 - rearrange(distance, "(c s) k -> c s k", c=num_chunks, s=num_speakers)
        if constrained:
            if self.inactive_speakers_last:
                inactive = segmentations.data.sum(1) == 0
                soft_clusters[inactive] = soft_clusters.min() - 1.0
            hard_clusters = self.constrained_argmax(soft_clusters)
        else:
            hard_clusters = np.argmax(soft_clusters, axis=2)
        hard_clusters = hard_clusters.reshape(num_chunks, num_speakers)
        if self.unassigned_as_speaker:
            hard_clusters, centroids = renumber_clusters(hard_clusters, centroids)
        return hard_clusters, soft_clusters, centroids


def renumber_clusters(hard_clusters: np.ndarray, centroids: np.ndarray):
    """Clusters renumbered 0, 1, ... in the order of their labels, -2 (unassigned) included

    hard_clusters : (chunks, speakers) int array; centroids : (clusters, dimension).
    Returns the renumbered (chunks, speakers) clusters and the centroids of the new numbers
    (zeros for the unassigned speakers' cluster, which has none).
    """
    labels, renumbered = np.unique(hard_clusters, return_inverse=True)
    rows = [np.zeros(centroids.shape[1]) if label == UNASSIGNED else centroids[label]
            for label in labels]
    return renumbered.reshape(hard_clusters.shape).astype(np.int8), np.vstack(rows)


# pyannote's Clustering members that take these options
CLUSTERING_CLASSES = {
    "AgglomerativeClustering": AgglomerativeClustering,
    "KMeansClustering": KMeansClustering,
    "VBxClustering": VBxClustering,
}
# VBx-only options
VBX_OPTIONS = ("inactive_speakers_last", "recluster_to_bounds", "unassigned_as_speaker")
