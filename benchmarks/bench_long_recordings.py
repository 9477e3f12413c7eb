"""Long recordings: the clustering and the steps after it, from 1 to 8 hours of audio.

What `SpeakerDiarization` computes after the embeddings, on synthetic segmentations and
embeddings of the pipeline's sizes (`pipelines.synthetic.synthetic_recording`: 8 s chunks
every 0.8 s, 20 ms frames, 3 local speakers, a conversation among 5 speakers with overlaps,
256-dimension embeddings whose noise grows as a speaker talks less in the chunk):

- the clustering step, for each clustering the pipeline offers: VBx (pyannote 4's default
  parameters, a PLDA estimated from other synthetic speakers), agglomerative (centroid
  linkage, threshold and minimum cluster size of pyannote/speaker-diarization-3.1) and
  k-means (given the number of speakers);
- the reconstruction (speaker counting, clustered segmentations, aggregation into the
  discrete diarization, annotation, and the same for the exclusive diarization), as
  pyannote's `SpeakerDiarization.apply` runs them after the clustering.

Each (hours, clustering) runs in a fresh process: its time and its peak resident memory
(sampled every 20 ms) over what the process held before the step (the inputs included). Up to
`MAX_CLUSTERED` clustered embeddings the clustering is pyannote's, exactly; past it, an evenly
spaced subset is clustered ("exact" column). With --exact-hours, those lengths also run with
the exact computation (`max_clustered=None`), and the DER of the default path against it is
given (collar 0, overlap scored): what the approximation changes. DER against the true
speakers (the synthetic conversation's) is given for every row.

    python benchmarks/bench_long_recordings.py [--hours 1 2 4 8] [--exact-hours 2]
        [--clusterings VBxClustering AgglomerativeClustering KMeansClustering]
        [--speakers 5] [--noise 0.025]

--speakers and --noise make the conversation harder to cluster (more speakers, noisier
embeddings: see `synthetic_recording`).

The share of the pipeline is the clustering's time over the whole pipeline's at RTF 0.161
(the fastest pipeline on 10 to 60-minute files, docs/deployment.md): 8 hours take 4,640 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

PIPELINE_RTF = 0.161
PARAMETERS = {
    "VBxClustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
    "AgglomerativeClustering": {"method": "centroid", "min_cluster_size": 12,
                                "threshold": 0.7045654963945799},
    "KMeansClustering": {},
}


def diarization(recording, hard_clusters: np.ndarray):
    """The discrete diarization pyannote's `apply` builds from `hard_clusters`, as an
    Annotation, and its exclusive one (the same steps, in the same order)."""
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization

    segmentations = recording.segmentations
    count = SpeakerDiarization.speaker_count(segmentations, recording.frames, warm_up=(0.0, 0.0))
    hard_clusters = hard_clusters.copy()
    hard_clusters[np.sum(segmentations.data, axis=1) == 0] = -2
    annotations = []
    for cap in (np.inf, 1):
        count.data = np.minimum(count.data, cap).astype(np.int8)
        # pyannote's reconstruct calls only static methods of the class
        discrete = SpeakerDiarization.reconstruct(SpeakerDiarization, segmentations,
                                                  hard_clusters, count)
        annotations.append(SpeakerDiarization.to_annotation(discrete, min_duration_on=0.0,
                                                            min_duration_off=0.0))
    return annotations


def run_one(hours: float, name: str, exact: bool, rttm: Path, speakers: int,
            noise: float) -> dict:
    """One row, in this process: clustering then reconstruction of a `hours` recording."""
    import warnings

    from bench_pipeline import PeakMemory

    from pyannote_wavlm_prune.pipelines.clustering import CLUSTERING_CLASSES
    from pyannote_wavlm_prune.pipelines.synthetic import synthetic_plda, synthetic_recording

    recording = synthetic_recording(hours * 3600, num_speakers=speakers, noise=noise)
    klass = CLUSTERING_CLASSES[name]
    clustering = klass(synthetic_plda(noise=noise)) if name == "VBxClustering" else klass()
    clustering.instantiate(PARAMETERS[name])
    limit = None if exact else clustering.max_clustered
    clustering.max_clustered = None  # to count the embeddings the clustering is given
    train, _, _ = clustering.filter_embeddings(recording.embeddings, recording.segmentations)
    num_clustered = len(train)
    del train
    clustering.max_clustered = limit
    num_clusters = speakers if name == "KMeansClustering" else None
    with PeakMemory() as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the approximation's warning, expected
        start = time.perf_counter()
        hard_clusters, _, _ = clustering(embeddings=recording.embeddings,
                                         segmentations=recording.segmentations,
                                         num_clusters=num_clusters, min_clusters=1,
                                         max_clusters=np.inf)
        clustering_seconds = time.perf_counter() - start
    with PeakMemory() as after:
        start = time.perf_counter()
        annotation, _ = diarization(recording, hard_clusters)
        after_seconds = time.perf_counter() - start
    annotation.uri = "recording"
    truth, _ = diarization(recording, recording.speakers)
    truth.uri = "recording"
    with open(rttm, "w") as file:
        annotation.write_rttm(file)
    with open(rttm.with_suffix(".truth.rttm"), "w") as file:
        truth.write_rttm(file)
    return {"hours": hours, "clustering": name, "chunks": recording.embeddings.shape[0],
            "embeddings": num_clustered,
            "exact": name == "KMeansClustering" or limit is None or num_clustered <= limit,
            "clustering_seconds": clustering_seconds,
            "clustering_growth": memory.peak - memory.before, "clustering_peak": memory.peak,
            "speakers": int(np.max(hard_clusters)) + 1,
            "after_seconds": after_seconds, "after_growth": after.peak - after.before,
            "after_peak": after.peak}


def der(reference_rttm: Path, hypothesis_rttm: Path, hours: float) -> float:
    """DER (%, collar 0) of the hypothesis over the whole recording."""
    from pyannote.core import Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = load_rttm(reference_rttm)["recording"]
    hypothesis = load_rttm(hypothesis_rttm)["recording"]
    whole = Timeline([Segment(0.0, hours * 3600)])
    return 100 * DiarizationErrorRate(collar=0.0)(reference, hypothesis, uem=whole)


def in_fresh_process(hours: float, name: str, exact: bool, rttm: Path, speakers: int,
                     noise: float) -> dict:
    command = [sys.executable, __file__, "--one", str(hours), name, str(rttm),
               "--speakers", str(speakers), "--noise", str(noise)]
    if exact:
        command.append("--exact")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--exact-hours", type=float, nargs="*", default=[2],
                        help="lengths also clustered exactly, for the DER of the default path "
                             "against it (default: 2)")
    parser.add_argument("--clusterings", nargs="+", default=list(PARAMETERS),
                        choices=list(PARAMETERS))
    parser.add_argument("--speakers", type=int, default=5, help="default: 5")
    parser.add_argument("--noise", type=float, default=0.025, help="default: 0.025")
    parser.add_argument("--one", nargs=3, metavar=("HOURS", "CLUSTERING", "RTTM"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        hours, name, rttm = args.one
        print(json.dumps(run_one(float(hours), name, args.exact, Path(rttm), args.speakers,
                                 args.noise)))
        return

    GB = 1e9
    print("| file | clustering | chunks | clustered embeddings | exact | clustering (s) | "
          "share of the pipeline | clustering peak growth (GB) | speakers | reconstruction (s) | "
          "reconstruction peak growth (GB) | DER vs truth (%) | DER vs exact (%) |")
    print("| --- " * 13 + "|")
    with tempfile.TemporaryDirectory() as scratch:
        for hours in args.hours:
            for name in args.clusterings:
                rttm = Path(scratch) / f"{hours}-{name}.rttm"
                row = in_fresh_process(hours, name, False, rttm, args.speakers, args.noise)
                truth = der(rttm.with_suffix(".truth.rttm"), rttm, hours)
                versus_exact = "0.00 (exact)" if row["exact"] else "not run"
                if not row["exact"] and hours in args.exact_hours:
                    exact_rttm = Path(scratch) / f"{hours}-{name}-exact.rttm"
                    exact = in_fresh_process(hours, name, True, exact_rttm, args.speakers,
                                             args.noise)
                    versus_exact = (f"{der(exact_rttm, rttm, hours):.2f} (exact: "
                                    f"{exact['clustering_seconds']:.1f} s, "
                                    f"{exact['clustering_growth'] / GB:.2f} GB)")
                share = row["clustering_seconds"] / (PIPELINE_RTF * hours * 3600)
                print(f"| {hours:g} h | {name} | {row['chunks']} | {row['embeddings']} | "
                      f"{'yes' if row['exact'] else 'no'} | {row['clustering_seconds']:.1f} | "
                      f"{100 * share:.2f} % | {row['clustering_growth'] / GB:.2f} | "
                      f"{row['speakers']} | {row['after_seconds']:.1f} | "
                      f"{row['after_growth'] / GB:.2f} | {truth:.2f} | {versus_exact} |",
                      flush=True)


if __name__ == "__main__":
    main()
