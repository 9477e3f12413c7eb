"""pyannote's SpeakerDiarization pipeline, usable offline with every clustering.

The class defined here is what `config.yaml` of an exported pipeline names
(`pyannote_wavlm_prune.pipelines.SpeakerDiarization`): its module path is a public interface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.audio import Audio
from pyannote.audio.core.io import AudioFile
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization
from pyannote.audio.pipelines.clustering import Clustering
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
from pyannote.audio.pipelines.utils import get_model
from pyannote.audio.utils.hf_hub import AssetFileName
from pyannote.core import Annotation, SlidingWindowFeature

from ..deploy.embedding import check_embedding_runtime, embedding_for_runtime
from ..deploy.runtime import check_runtime, segmentation_for_runtime

CLUSTERINGS = tuple(Clustering.__members__)

# Chunks per forward pass, those of pyannote's own hub pipelines (speaker-diarization-3.1,
# speaker-diarization-community-1); pyannote's class defaults to 1, one chunk at a time.
SEGMENTATION_BATCH_SIZE = 32
EMBEDDING_BATCH_SIZE = 32

# Clusterings that group speakers with a speaker embedding model.

# Hyper-parameters a pipeline starts from when none are given. Agglomerative values are those
# of pyannote/speaker-diarization-3.1, VBx values those of pyannote 4.0.7's own defaults.
DEFAULT_PARAMETERS = {
    "AgglomerativeClustering": {
        "method": "centroid",
        "min_cluster_size": 12,
        "threshold": 0.7045654963945799,
    },
    "KMeansClustering": {},
    "VBxClustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
    "OracleClustering": {},
}


class NoPLDA(PLDA):
    """Stands in for the PLDA that pyannote 4.0.7 loads even when the clustering needs none.

    pyannote's default PLDA lives in a gated hub repository; clusterings other than VBx never
    call it, so this placeholder only raises if something does.
    """

    def __init__(self):  # no files to read
        self.lda_dimension = 0

    def __call__(self, embeddings: np.ndarray):
        raise RuntimeError("This pipeline has no PLDA: VBxClustering needs plda=... (a PLDA).")


class NoEmbedding:
    """Stands in for the speaker embedding of an OracleClustering pipeline built without one.

    pyannote reads `_embedding.dimension` even when it has no embedding to compute (to shape
    an empty output); OracleClustering needs no embedding, so this one has dimension 0.
    """

    dimension = 0


class AudioDecodingError(ValueError):
    """An audio file that exists but cannot be read."""


class SpeakerDiarization(PyannoteSpeakerDiarization):
    """pyannote.audio's SpeakerDiarization pipeline, runnable offline with any clustering

    Parameters are those of `pyannote.audio.pipelines.SpeakerDiarization`, except:

    embedding : Model, str or dict, optional
        Speaker embedding model. Required by every clustering but OracleClustering, which
        uses it (when given) only to return one embedding per speaker.
    plda : PLDA, str or dict, optional
        Needed by VBxClustering only (see `pyannote_wavlm_prune.pipelines.estimate_plda`).
    clustering : str, optional
        One of AgglomerativeClustering (default), KMeansClustering, VBxClustering,
        OracleClustering. OracleClustering groups speakers with the reference annotation
        (file["annotation"]): what segmentation papers report.
    segmentation_runtime : str, optional
        How the segmentation model runs: "torch" (weight norm folded), "torch-int8",
        "onnxruntime" or "onnxruntime-int8" (see `pyannote_wavlm_prune.deploy.RUNTIMES`).
        Defaults to None: as its checkpoint is (a torch model, or an ONNX graph for a
        checkpoint of `OnnxSegmentation`). Written in config.yaml by `export_pipeline`.
    segmentation_batch_size, embedding_batch_size : int, optional
        Chunks per forward pass. Default to 32, as pyannote's hub pipelines (pyannote's
        class defaults to 1).

    Differences in behaviour, each fixing a trap of pyannote 4.0.7:

    - nothing is fetched from the hub: no default embedding, PLDA or segmentation;
    - OracleClustering works (pyannote's crashes on the missing `_audio`);
    - `default_parameters()` suits the chosen clustering (pyannote's are VBx's only);
    - files carrying "pipeline_kwargs" (e.g. {"num_speakers": 2}) can be optimized: pyannote
      passes them twice otherwise (TypeError);
    - while optimized (`pipeline.training`), `apply` returns the bare `Annotation` that
      pyannote.pipeline's Optimizer scores, whatever `legacy` says;
    - a missing checkpoint, an unreadable audio file or one shorter than a frame raise an
      error naming it, before any work starts.
    """

    def __init__(
        self,
        segmentation: Any,
        embedding: Any = None,
        plda: Any = None,
        clustering: str = "AgglomerativeClustering",
        segmentation_runtime: str | None = None,
        embedding_runtime: str | None = None,
        segmentation_batch_size: int = SEGMENTATION_BATCH_SIZE,
        embedding_batch_size: int = EMBEDDING_BATCH_SIZE,
        **kwargs,
    ):
        if clustering not in CLUSTERINGS:
            raise ValueError(f"clustering={clustering!r}: expected one of {list(CLUSTERINGS)}.")
        check_runtime(segmentation_runtime)
        check_embedding_runtime(embedding_runtime)
        _check_checkpoint_exists("segmentation", segmentation)
        if embedding is None:
            if clustering != "OracleClustering":
                raise ValueError(
                    f"clustering={clustering!r} needs embedding=... (a speaker embedding Model "
                    "or checkpoint); only OracleClustering runs without one."
                )
        else:
            _check_checkpoint_exists("embedding", embedding)
        if plda is None:
            if clustering == "VBxClustering":
                raise ValueError(
                    "clustering='VBxClustering' needs plda=... (a PLDA or its directory, "
                    "see pyannote_wavlm_prune.pipelines.estimate_plda)."
                )
            plda = NoPLDA()
        else:
            _check_plda_exists(plda)

        # the model as its checkpoint holds it (what save_pipeline writes), and the one run
        source = get_model(segmentation, token=kwargs.get("token"),
                           cache_dir=kwargs.get("cache_dir"))
        segmentation = segmentation_for_runtime(source, segmentation_runtime)
        if embedding is not None and embedding_runtime is not None:
            embedding = embedding_for_runtime(get_model(embedding, token=kwargs.get("token"),
                                                        cache_dir=kwargs.get("cache_dir")),
                                              embedding_runtime)

        super().__init__(
            segmentation=segmentation,
            embedding=embedding,
            plda=plda,
            clustering=clustering,
            segmentation_batch_size=segmentation_batch_size,
            embedding_batch_size=embedding_batch_size,
            **kwargs,
        )
        self.segmentation_runtime = segmentation_runtime
        self.embedding_runtime = embedding_runtime
        self.segmentation_source = source

        if clustering == "OracleClustering":
            # pyannote skips the embedding set-up for OracleClustering but still calls
            # get_embeddings, which reads self._audio: set up what is needed here
            if embedding is None:
                self._embedding = NoEmbedding()
            else:
                self._embedding = PretrainedSpeakerEmbedding(
                    embedding, token=kwargs.get("token"), cache_dir=kwargs.get("cache_dir")
                )
                self._audio = Audio(sample_rate=self._embedding.sample_rate, mono="downmix")

    def default_parameters(self) -> dict:
        return {
            "segmentation": {"min_duration_off": 0.0},
            "clustering": dict(DEFAULT_PARAMETERS[self.klustering]),
        }

    def get_embeddings(
        self,
        file: AudioFile,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook=None,
    ) -> np.ndarray | None:
        """Embeddings of each (chunk, speaker) pair, or None without an embedding model."""
        if isinstance(self._embedding, NoEmbedding):
            return None
        return super().get_embeddings(
            file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook
        )

    def __call__(self, file: AudioFile | list[AudioFile], preload: bool = False, **kwargs):
        """Diarize `file` (see pyannote.audio's Pipeline.__call__)."""
        if isinstance(file, Mapping) and "pipeline_kwargs" in file:
            # pyannote.pipeline's Optimizer passes file["pipeline_kwargs"] as keyword
            # arguments and pyannote.audio's __call__ adds them again: a TypeError
            # ("multiple values for keyword argument") unless duplicates are dropped here
            for name, value in file["pipeline_kwargs"].items():
                if name in kwargs and kwargs[name] != value:
                    raise ValueError(
                        f"{name}={kwargs[name]!r} contradicts file['pipeline_kwargs'] "
                        f"({name}={value!r}) for {file.get('uri')!r}: expected one value."
                    )
                kwargs.pop(name, None)
        return super().__call__(file, preload=preload, **kwargs)

    def apply(self, file: AudioFile, **kwargs) -> DiarizeOutput | Annotation:
        """Speaker diarization of `file` (see pyannote's SpeakerDiarization.apply)."""
        self._check_audio(file)
        output = super().apply(file, **kwargs)
        if self.training and isinstance(output, DiarizeOutput):
            # pyannote.pipeline's Optimizer feeds the output to a metric, which needs an
            # Annotation (trap: DiarizeOutput has no `crop`)
            return output.speaker_diarization
        return output

    def _check_audio(self, file: AudioFile):
        """Raise a clear error for audio that cannot be read or is shorter than one frame."""
        uri = file.get("uri", "?") if isinstance(file, Mapping) else str(file)
        where = file.get("audio", uri) if isinstance(file, Mapping) else file
        if isinstance(where, Mapping):
            where = "in-memory waveform"
        try:
            duration = Audio(mono="downmix").get_duration(file)
        except Exception as error:  # torchcodec raises RuntimeError or ValueError
            raise AudioDecodingError(
                f"Cannot decode audio file {where!s} (uri {uri!r}): {error}. Expected audio "
                "that FFmpeg can read (wav, flac, mp3, ...)."
            ) from error
        frame = self._segmentation.model.receptive_field.duration
        # an empty file has no duration at all (None), not a zero one
        if duration is None or not duration > 0:
            raise ValueError(
                f"Audio {where!s} (uri {uri!r}) is empty or of unknown duration ({duration}): "
                f"expected at least {frame:.4f} s (one frame of the segmentation model)."
            )
        if duration < frame:
            raise ValueError(
                f"Audio {uri!r} lasts {duration:.4f} s: the segmentation model needs at least "
                f"{frame:.4f} s (one frame); audio: {where!s}."
            )


def _checkpoint_file(model: Any) -> Path | None:
    """The local checkpoint file that `model` (a get_model argument) points at, if local."""
    if isinstance(model, Mapping):
        checkpoint = model.get("checkpoint")
        if checkpoint is None or not os.path.isdir(checkpoint):
            return None  # hub identifier: not ours to check
        subfolder = model.get("subfolder") or ""
        return Path(checkpoint) / subfolder / AssetFileName.Model.value
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir():
            return path / AssetFileName.Model.value
        if path.is_absolute() or path.suffix in (".bin", ".ckpt", ".pt") or path.exists():
            return path
    return None


def _check_checkpoint_exists(role: str, model: Any):
    path = _checkpoint_file(model)
    if path is not None and not path.is_file():
        raise FileNotFoundError(
            f"{role} checkpoint {path} does not exist (from {role}={_describe(model)}): "
            f"expected a pyannote checkpoint file ({AssetFileName.Model.value})."
        )


def _check_plda_exists(plda: Any):
    if isinstance(plda, PLDA):
        return
    directory = None
    if isinstance(plda, Mapping) and plda.get("checkpoint") is not None:
        if os.path.isdir(plda["checkpoint"]):
            directory = Path(plda["checkpoint"]) / (plda.get("subfolder") or "")
    elif isinstance(plda, (str, os.PathLike)) and (Path(plda).is_absolute() or Path(plda).exists()):
        directory = Path(plda)
    if directory is None:
        return
    missing = [n for n in ("xvec_transform.npz", "plda.npz") if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"PLDA directory {directory} lacks {', '.join(missing)} (from plda={_describe(plda)}): "
            "expected xvec_transform.npz and plda.npz (see estimate_plda)."
        )


def _describe(model: Any) -> str:
    if isinstance(model, Mapping) and "checkpoint" in model:
        return f"{model['checkpoint']}, subfolder {model.get('subfolder')!r}"
    return repr(str(model))
