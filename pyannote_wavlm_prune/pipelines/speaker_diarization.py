"""`SpeakerDiarization`: pyannote's pipeline, usable offline with every clustering.

The class defined here is what `config.yaml` of an exported pipeline names
(`pyannote_wavlm_prune.pipelines.SpeakerDiarization`; `pipelines.offline`, its former module,
re-exports it): a public interface. It builds on the audio intake (`audio`), the embeddings
per chunk (`chunkwise_embeddings`), the resolver of its parts (`parts`) and pyannote's
clusterings with DiariZen's rules (`clustering`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from pyannote.audio.core.io import AudioFile
from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization
from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
from pyannote.core import Annotation, Segment, SlidingWindowFeature
from scipy.ndimage import median_filter as scipy_median_filter

from ..deploy.embedding import check_embedding_runtime
from ..deploy.runtime import check_runtime
from ..settings import (
    DEFAULT_HYPER_PARAMETERS,
    DIARIZATION_OPTIONS,
    PARTS,
    SETTINGS,
    check_hyper_parameters,
    check_settings,
    check_speaker_counts,
)
from .audio import DownmixedAudio, decode, describe_file, readable, select_channel
from .chunkwise_embeddings import ChunkwiseEmbeddings, chunkwise_model
from .clustering import CLUSTERING_CLASSES, PYANNOTE_MIN_CLEAN_RATIO
from .parts import NoEmbedding, check_parts, load_models

# Chunks per forward pass, those of pyannote's own hub pipelines (speaker-diarization-3.1,
# speaker-diarization-community-1); pyannote's class defaults to 1, one chunk at a time.
SEGMENTATION_BATCH_SIZE = 32
EMBEDDING_BATCH_SIZE = 32

# the options of this class beyond pyannote's, each at pyannote 4.0.7's behaviour (the
# defaults, from the one table of settings); `import-diarizen` writes DiariZen's values into
# config.yaml (see docs/diarizen.md)
PIPELINE_OPTIONS = {name: SETTINGS[name].default for name in DIARIZATION_OPTIONS}


class NonFiniteScoresError(ValueError):
    """A segmentation model whose scores hold NaN or infinities (on finite audio: its weights)."""


def _refuse_non_finite_scores(module, inputs, scores: torch.Tensor) -> None:
    """Forward hook: a segmentation model's NaN scores would become "nobody speaks"."""
    if not torch.isfinite(scores).all():
        raise NonFiniteScoresError("non-finite segmentation scores")


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
        Waveforms per forward pass: chunks, or (chunk, speaker) pairs on pyannote's embedding
        path. Default to 32, as pyannote's hub pipelines (pyannote's class defaults to 1).
    chunkwise_embeddings : bool, optional
        Embed all the speakers of a chunk from one pass of the embedding model's frame-wise
        part, and skip (chunk, speaker) pairs without an active frame (see `get_embeddings`).
        Defaults to None: whenever the embedding model supports it (`forward_frames` and
        `forward_embedding` with (batch, speakers, frames) weights, as pyannote's WeSpeaker
        models and this project's XVectorMFCC); False takes pyannote's path, one pass of the
        whole model per (chunk, speaker) pair. `embedding_path` says which path is taken.

    Options that make it compute what DiariZen's pipeline computes (its names in brackets;
    the defaults are pyannote 4.0.7's behaviour, `PIPELINE_OPTIONS`):

    median_filter : int, optional
        Kernel, in frames, of a median filter over each chunk's segmentation (the hard one of
        a powerset model) before speakers are counted, embedded, clustered and reassembled
        (DiariZen `apply_median_filtering`: 11, reflected at the chunk's edges). Defaults to
        1: none.
    min_clean_ratio : float, optional
        Share of a chunk's frames a local speaker must hold alone for its embedding to be
        clustered (DiariZen `min_frames_ratio`: 0.1). Defaults to 0.2.
    clean_ratio_fallback : bool, optional
        When fewer than two embeddings pass `min_clean_ratio`, cluster those of every active
        speaker (DiariZen: always). Defaults to False.
    inactive_speakers_last : bool, optional
        VBx only: score speakers without an active frame below every active one in the
        one-speaker-per-cluster assignment (DiariZen: no, `const_location=None`). Defaults
        to True.
    recluster_to_bounds : bool, optional
        VBx only: re-cluster with k-means when VBx's number of speakers falls outside
        num/min/max speakers (DiariZen's VBx ignores them). Defaults to True.
    unassigned_as_speaker : bool, optional
        VBx only: renumber the clusters so that the active local speakers the assignment left
        without a cluster become one more output speaker (DiariZen's VBx does, with
        `np.unique`: a defect kept for DiariZen's pipelines only). Defaults to False.
    min_speakers, max_speakers : int, optional
        Bounds used when a call gives none (DiariZen [clustering.args] `min_speakers`,
        `max_speakers`: 1 and 20); `max_speakers` also caps the instantaneous speaker count,
        as pyannote's does with the call's. Default to None: unbounded.
    channel : int, optional
        Diarize this channel of a multi-channel file (DiariZen: 0, the first). Defaults to
        None: the channels' mean, pyannote's downmix.
    crop_to_audio : bool, optional
        Cut what the output says after the file's end, where the last chunk was padded with
        zeros (DiariZen does not). Defaults to True.

    Differences in behaviour, each fixing a trap of pyannote 4.0.7:

    - nothing is fetched from the hub: no default embedding, PLDA or segmentation;
    - OracleClustering works (pyannote's crashes on the missing `_audio`);
    - `default_parameters()` suits the chosen clustering (pyannote's are VBx's only);
    - files carrying "pipeline_kwargs" (e.g. {"num_speakers": 2}) can be optimized: pyannote
      passes them twice otherwise (TypeError);
    - while optimized (`pipeline.training`), `apply` returns the bare `Annotation` that
      pyannote.pipeline's Optimizer scores, whatever `legacy` says;
    - a missing checkpoint, an unreadable audio file or one shorter than a frame raise an
      error naming it, before any work starts;
    - compressed audio (MP3, OGG, AAC, ...), which pyannote cannot crop to the sample, is
      decoded once into memory (`audio.seeks_exactly`): every format FFmpeg reads works;
    - audio with NaN or infinite samples, and a segmentation model whose scores are not
      finite (NaN weights), raise an error naming the file, where pyannote returns an empty
      diarization;
    - no turn ends after the file does (pyannote's padded last chunk leaves turns there);
    - embeddings take one frame-wise pass per chunk, none for silent speakers
      (`chunkwise_embeddings`), with the same diarization as pyannote's path.
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
        chunkwise_embeddings: bool | None = None,
        median_filter: int = 1,
        min_clean_ratio: float = PYANNOTE_MIN_CLEAN_RATIO,
        clean_ratio_fallback: bool = False,
        inactive_speakers_last: bool = True,
        recluster_to_bounds: bool = True,
        unassigned_as_speaker: bool = False,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        channel: int | None = None,
        crop_to_audio: bool = True,
        **kwargs,
    ):
        # every setting checked against the one table (`settings.SETTINGS`), unknown ones too
        given = check_settings({
            "clustering": clustering, "segmentation_runtime": segmentation_runtime,
            "embedding_runtime": embedding_runtime,
            "segmentation_batch_size": segmentation_batch_size,
            "embedding_batch_size": embedding_batch_size,
            "chunkwise_embeddings": chunkwise_embeddings, "median_filter": median_filter,
            "min_clean_ratio": min_clean_ratio, "clean_ratio_fallback": clean_ratio_fallback,
            "inactive_speakers_last": inactive_speakers_last,
            "recluster_to_bounds": recluster_to_bounds,
            "unassigned_as_speaker": unassigned_as_speaker, "min_speakers": min_speakers,
            "max_speakers": max_speakers, "channel": channel, "crop_to_audio": crop_to_audio,
            **kwargs}, "SpeakerDiarization", parts=tuple(name for name in PARTS if name not in (
                "segmentation", "embedding", "plda")))
        options = {name: given[name] for name in DIARIZATION_OPTIONS}
        options["min_clean_ratio"] = float(options["min_clean_ratio"])
        check_runtime(segmentation_runtime)
        check_embedding_runtime(embedding_runtime)
        # every part checked before any is loaded, then loaded safely (`parts`)
        plda = check_parts(clustering, segmentation, embedding, plda)
        source, segmentation, embedding = load_models(segmentation, embedding,
                                                      segmentation_runtime, embedding_runtime,
                                                      kwargs)

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
                self._audio = DownmixedAudio(sample_rate=self._embedding.sample_rate)

        self.chunkwise_embeddings = chunkwise_embeddings
        # which path the embeddings take, said once (`chunkwise_embeddings.chunkwise_model`)
        self._chunkwise = None
        if not isinstance(getattr(self, "_embedding", None), (NoEmbedding, type(None))):
            model = chunkwise_model(self._embedding, chunkwise_embeddings)
            if model is not None:
                self._chunkwise = ChunkwiseEmbeddings(model, self._embedding, self._audio)

        if clustering in CLUSTERING_CLASSES:
            # pyannote's clustering, with the options of `clustering.py`
            klass = CLUSTERING_CLASSES[clustering]
            metric = self.clustering.metric
            self.clustering = (klass(self._plda, metric=metric) if clustering == "VBxClustering"
                               else klass(metric=metric))
        for name, value in options.items():
            setattr(self, name, value)
            if hasattr(type(self.clustering), name):  # a rule of the clustering itself
                setattr(self.clustering, name, value)

    @property
    def diarization_options(self) -> dict[str, Any]:
        """The options of `PIPELINE_OPTIONS` that differ from pyannote's behaviour."""
        return {name: getattr(self, name) for name, default in PIPELINE_OPTIONS.items()
                if getattr(self, name) != default}

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting of `settings.SETTINGS`, as this pipeline holds it (what
        `save_pipeline` writes)."""
        held = {name: getattr(self, name, setting.default) for name, setting in SETTINGS.items()}
        held["clustering"] = self.klustering
        return held

    def instantiate(self, params: dict) -> SpeakerDiarization:
        """Set the hyper-parameters `params`, refused in one line when one means nothing
        (a NaN or negative threshold, a negative min_cluster_size or min_duration_off)."""
        check_hyper_parameters(params, "SpeakerDiarization.instantiate")
        return super().instantiate(params)

    @property
    def embedding_path(self) -> str | None:
        """"per-chunk" (one frame-wise pass per chunk with an active speaker), "per-pair"
        (pyannote's: one pass per (chunk, speaker) pair), or None without an embedding."""
        if isinstance(getattr(self, "_embedding", None), (NoEmbedding, type(None))):
            return None
        chunkwise = self._chunkwise is not None and self.chunkwise_embeddings is not False
        return "per-chunk" if chunkwise else "per-pair"

    def get_segmentations(self, file: AudioFile, hook=None) -> SlidingWindowFeature:
        """(chunks, frames, speakers) segmentation of each chunk, median-filtered over
        `median_filter` frames when asked (pyannote's, and its cache when optimized, stay
        unfiltered); non-finite scores are refused (NonFiniteScoresError), which pyannote's
        powerset conversion would turn into silence."""
        handle = self._segmentation.model.register_forward_hook(_refuse_non_finite_scores)
        try:
            segmentations = super().get_segmentations(file, hook=hook)
        finally:
            handle.remove()
        if self.median_filter == 1:
            return segmentations
        filtered = scipy_median_filter(segmentations.data, size=(1, self.median_filter, 1),
                                       mode="reflect")
        return SlidingWindowFeature(filtered, segmentations.sliding_window)

    def default_parameters(self) -> dict:
        return {
            "segmentation": dict(DEFAULT_HYPER_PARAMETERS["segmentation"]),
            "clustering": dict(DEFAULT_HYPER_PARAMETERS["clustering"][self.klustering]),
        }

    def get_embeddings(
        self,
        file: AudioFile,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook=None,
    ) -> np.ndarray | None:
        """Embeddings of each (chunk, speaker) pair, or None without an embedding model

        Parameters and output are those of pyannote's `get_embeddings`: binary_segmentations
        (chunks, frames, speakers), embeddings (chunks, speakers, dimension). On the per-chunk
        path (`embedding_path`), the frame-wise part of the embedding model runs once per chunk
        that has an active speaker, in batches of `embedding_batch_size` chunks, pooled with
        the masks of all the chunk's speakers at once (`ChunkwiseEmbeddings`), with pyannote's
        masks, embedding cache of an optimized pipeline and hook calls.
        """
        if isinstance(self._embedding, NoEmbedding):
            return None
        if self._chunkwise is None or self.chunkwise_embeddings is False:
            return super().get_embeddings(
                file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook
            )
        # an optimized pipeline reuses its first trial's embeddings, as pyannote's does
        if self.training:
            cache = file.get("training_cache/embeddings", dict())
            if "embeddings" in cache and (
                self._segmentation.model.specifications.powerset
                or cache["segmentation.threshold"] == self.segmentation.threshold
            ):
                return cache["embeddings"]

        masks = self._chunkwise.masks(binary_segmentations, exclude_overlap)
        embeddings = self._chunkwise(file, binary_segmentations.sliding_window, masks,
                                     self.embedding_batch_size, hook=hook)
        if self.training:
            cache = {"embeddings": embeddings}
            if not self._segmentation.model.specifications.powerset:
                cache["segmentation.threshold"] = self.segmentation.threshold
            file["training_cache/embeddings"] = cache
        return embeddings

    def __call__(self, file: AudioFile | list[AudioFile], preload: bool = False, **kwargs):
        """Diarize `file` (see pyannote.audio's Pipeline.__call__); for a list of files, an
        iterator of (file, output) pairs (`apply_batch`)."""
        if isinstance(file, Mapping) and "pipeline_kwargs" in file:
            # pyannote.pipeline's Optimizer passes file["pipeline_kwargs"] as keyword
            # arguments and pyannote.audio's __call__ adds them again: a TypeError
            # ("multiple values for keyword argument") unless duplicates are dropped here
            kwargs = _without_file_kwargs(file, kwargs)
        return super().__call__(file, preload=preload, **kwargs)

    def apply_batch(self, files: Iterable[AudioFile], errors: str = "raise",
                    **kwargs) -> Iterator[tuple[AudioFile, Any]]:
        """(file, output) for each of `files`, in their order: pyannote's batch convention
        (since pyannote.audio 4.0.7, `pipeline([file, ...])` calls it)

        Each output is what `apply` gives for that file alone, with the file's own
        "pipeline_kwargs" and `kwargs` (num_speakers, ...): `pipeline([a, b])` yields what
        `pipeline(a)` and `pipeline(b)` return. Files are diarized one after another, each read
        when its turn comes: sharing model batches between files would change the scores in
        their last bits (a batch's composition changes float32 kernels' sums) and saves
        nothing on a CPU (benchmarks/bench_batch.py).

        errors : "raise" (default) or "yield"
            What a file whose diarization fails gives: its exception raised (pyannote's
            behaviour: the files after it are not diarized) or yielded in place of its output,
            so that the others go on (`diarize`).
        """
        if errors not in ("raise", "yield"):
            raise ValueError(f"errors={errors!r}: expected 'raise' or 'yield'.")
        for file in files:
            own = file.get("pipeline_kwargs", {}) if isinstance(file, Mapping) else {}
            try:
                output = self.apply(file, **own, **_without_file_kwargs(file, kwargs))
            except Exception as error:  # noqa: BLE001 - the caller asked for it
                if errors == "raise":
                    raise
                output = error
            yield file, output

    def apply(self, file: AudioFile, num_speakers: int | None = None,
              min_speakers: int | None = None, max_speakers: int | None = None,
              **kwargs) -> DiarizeOutput | Annotation:
        """Speaker diarization of `file` (see pyannote's SpeakerDiarization.apply)

        Bounds the call does not give are the pipeline's `min_speakers` / `max_speakers`.
        Counts that mean nothing (NaN, 0, -1, 1.5, "2", min > max) are refused.
        """
        check_speaker_counts(num_speakers, min_speakers, max_speakers)
        file, duration = readable(file, self._segmentation.model.receptive_field.duration)
        if num_speakers is None:
            min_speakers = self.min_speakers if min_speakers is None else min_speakers
            max_speakers = self.max_speakers if max_speakers is None else max_speakers
        try:
            output = super().apply(select_channel(file, self.channel), num_speakers=num_speakers,
                                   min_speakers=min_speakers, max_speakers=max_speakers,
                                   **kwargs)
        except NonFiniteScoresError:
            # the samples of a file read chunk by chunk are unchecked: they, or the weights
            if "waveform" not in file:
                decode(file)
            raise NonFiniteScoresError(
                f"The segmentation model gives NaN or infinite scores on {describe_file(file)}, whose "
                f"samples are finite: {_non_finite_weights(self._segmentation.model)}"
            ) from None
        if self.crop_to_audio:
            output = _within(output, duration)
        if self.training and isinstance(output, DiarizeOutput):
            # pyannote.pipeline's Optimizer feeds the output to a metric, which needs an
            # Annotation (trap: DiarizeOutput has no `crop`)
            return output.speaker_diarization
        return output

def _without_file_kwargs(file: AudioFile, kwargs: dict) -> dict:
    """`kwargs` less those that `file`'s "pipeline_kwargs" give too (with the same value: a
    contradiction is an error naming both)."""
    given = file.get("pipeline_kwargs", {}) if isinstance(file, Mapping) else {}
    for name, value in given.items():
        if name in kwargs and kwargs[name] != value:
            raise ValueError(f"{name}={kwargs[name]!r} contradicts file['pipeline_kwargs'] "
                             f"({name}={value!r}) for {file.get('uri')!r}: expected one value.")
    return {name: value for name, value in kwargs.items() if name not in given}


def _non_finite_weights(model) -> str:
    """What a segmentation model's weights say about its non-finite scores."""
    parameters = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    bad = sum(int((~torch.isfinite(p)).sum()) for p in parameters)
    if bad:
        total = sum(p.numel() for p in parameters)
        return (f"{bad} of its {total} weights are NaN or infinite. Expected a model with "
                "finite weights (retrain, or use an earlier checkpoint).")
    return "expected a model with finite scores (its weights are finite)."


def _within(output: DiarizeOutput | Annotation, duration: float) -> DiarizeOutput | Annotation:
    """`output` without what lies after the file's end

    pyannote pads the last chunk with zeros and does not crop its output to the file: a turn
    can end after the audio does (a 0.05 s file got a turn to 1.99 s).
    """
    extent = Segment(0.0, duration)
    if isinstance(output, Annotation):
        return output.crop(extent, mode="intersection")
    labels = output.speaker_diarization.labels()
    diarization = output.speaker_diarization.crop(extent, mode="intersection")
    embeddings = output.speaker_embeddings
    if embeddings is not None and diarization.labels() != labels:
        # a speaker heard only after the end: its row goes with it (rows follow labels())
        embeddings = embeddings[[labels.index(label) for label in diarization.labels()]]
    return DiarizeOutput(
        speaker_diarization=diarization,
        exclusive_speaker_diarization=output.exclusive_speaker_diarization.crop(
            extent, mode="intersection"),
        speaker_embeddings=embeddings,
    )
