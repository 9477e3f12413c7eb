"""pyannote's SpeakerDiarization pipeline offline: run, save, load, tune, score, benchmark.

The offline recipe, with nothing from the Hugging Face hub::

    from pyannote.audio import Pipeline
    from pyannote_wavlm_prune.pipelines.embedding_training import train_embedding
    from pyannote_wavlm_prune.pipelines import (
        estimate_plda, evaluate_pipeline, export_pipeline, get_files, optimize_pipeline,
        speaker_embeddings)

    embedding = train_embedding(protocol, "embedding.ckpt")            # speaker embedding
    plda = estimate_plda(*speaker_embeddings(embedding, protocol.train()))  # for VBx
    export_pipeline("pipeline", "pruned.ckpt", embedding, plda, clustering="VBxClustering")
    optimize_pipeline("pipeline", get_files(protocol, "development"), output="tuned")
    report = evaluate_pipeline(Pipeline.from_pretrained("tuned"), get_files(protocol, "test"))
    print(report.table())

`load_pipeline("tuned", clustering="OracleClustering")` scores the segmentation alone.
"""

from .audio import AudioDecodingError
from .evaluate import EvaluationReport, evaluate_pipeline, get_files
from .export import export_pipeline, load_pipeline, save_pipeline
from .optimize import OptimizationResult, optimize_pipeline
from .plda import StoredPLDA, estimate_plda, speaker_embeddings
from .segmentation_bench import BenchResult, bench_segmentation
from .speaker_diarization import SpeakerDiarization

__all__ = [
    "AudioDecodingError",
    "BenchResult",
    "EvaluationReport",
    "OptimizationResult",
    "SpeakerDiarization",
    "StoredPLDA",
    "bench_segmentation",
    "estimate_plda",
    "evaluate_pipeline",
    "export_pipeline",
    "get_files",
    "load_pipeline",
    "optimize_pipeline",
    "save_pipeline",
    "speaker_embeddings",
]
