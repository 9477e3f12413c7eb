"""Diarization error rate and speed of a pipeline on a protocol subset."""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pyannote.audio import Audio
from pyannote.audio.pipelines.utils.oracle import oracle_segmentation
from pyannote.core import Annotation, Segment, SlidingWindow, SlidingWindowFeature
from pyannote.database import FileFinder, Protocol
from pyannote.metrics.diarization import DiarizationErrorRate
from tqdm.auto import tqdm

from ..data.protocols import get_protocol
from ..files import write_atomically

SUBSETS = ("train", "development", "test")


def get_files(
    protocol: Protocol | str,
    subset: str = "test",
    databases: Sequence[str | os.PathLike] = (),
) -> list[Mapping]:
    """Files of a protocol subset, each with its audio located

    Parameters
    ----------
    protocol : Protocol or str
        A pyannote.database protocol, or its name (e.g. "AMI.SpeakerDiarization.mini").
    subset : str, optional
        "train", "development" or "test" (default).
    databases : list of paths, optional
        database.yml files that define `protocol` when it is given by name (see
        `data.protocols.get_protocol`).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset={subset!r}: expected one of {list(SUBSETS)}.")
    if isinstance(protocol, str):
        protocol = get_protocol(databases, protocol)
    files = list(getattr(protocol, subset)())
    if not files:
        raise ValueError(f"{protocol.name} has no file in subset {subset!r}.")
    for file in files:
        if "annotation" not in file:
            raise ValueError(f"{file['uri']} has no reference annotation: expected one to score.")
        if "audio" not in file and "waveform" not in file:
            # protocols loaded without preprocessors know their audio only via the registry
            file["audio"] = FileFinder()(file)
    return files


@dataclass
class FileScore:
    """Errors and timings on one file (durations in seconds)."""

    uri: str
    duration: float
    reference: float  # scored reference speech ("total" of pyannote.metrics)
    missed: float
    false_alarm: float
    confusion: float
    processing_time: float
    segmentation_time: float
    # speech of the segmentation's local speakers, summed over chunks, and the part of it
    # spoken by each local speaker's main reference speaker (see `local_speaker_purity`);
    # None when not measured
    local_speech: float | None = None
    local_pure: float | None = None
    # the same for a segmentation that gives all speech of a chunk to one local speaker
    single_speech: float | None = None
    single_pure: float | None = None

    @property
    def der(self) -> float:
        """Diarization error rate: (missed + false alarm + confusion) / reference."""
        return error_rate(self.missed + self.false_alarm + self.confusion, self.reference)

    @property
    def local_purity(self) -> float | None:
        """Share of the local speakers' speech spoken by their main reference speaker."""
        return _share(self.local_pure, self.local_speech)

    @property
    def single_speaker_purity(self) -> float | None:
        """Local-speaker purity of a segmentation that gives all speech of a chunk to one local
        speaker (the floor any segmentation that detects speech reaches)."""
        return _share(self.single_pure, self.single_speech)


def error_rate(error: float, reference: float) -> float:
    """error / reference, as pyannote.metrics defines it without reference speech: 0 without
    error, 1 (100 %) with any."""
    return error / reference if reference > 0 else float(error > 0)


def _share(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None:
        return None
    return part / whole if whole > 0 else 1.0


@dataclass
class FileFailure:
    """A file that could not be diarized or scored, and why (one line)."""

    uri: str
    error: str


@dataclass
class EvaluationReport:
    """Per-file and total DER with its components, and real-time factors; the files that
    failed are left out of the totals and listed."""

    files: list[FileScore]
    collar: float = 0.0
    skip_overlap: bool = False
    rttm: list[Path] = field(default_factory=list)
    failed: list[FileFailure] = field(default_factory=list)

    def _sum(self, name: str) -> float:
        return sum(getattr(score, name) for score in self.files)

    @property
    def reference(self) -> float:
        return self._sum("reference")

    @property
    def missed(self) -> float:
        return self._sum("missed")

    @property
    def false_alarm(self) -> float:
        return self._sum("false_alarm")

    @property
    def confusion(self) -> float:
        return self._sum("confusion")

    @property
    def der(self) -> float:
        """Total DER, pooled over files (not the mean of per-file DERs)."""
        return error_rate(self.missed + self.false_alarm + self.confusion, self.reference)

    @property
    def duration(self) -> float:
        return self._sum("duration")

    def _pooled_share(self, part: str, whole: str) -> float | None:
        """sum of `part` / sum of `whole` over files; None when some file did not measure them."""
        if any(getattr(score, name) is None for score in self.files for name in (part, whole)):
            return None
        return _share(self._sum(part), self._sum(whole))

    @property
    def local_purity(self) -> float | None:
        """Local-speaker purity pooled over files (see `local_speaker_purity`); None when
        some file was not measured."""
        return self._pooled_share("local_pure", "local_speech")

    @property
    def single_speaker_purity(self) -> float | None:
        """`FileScore.single_speaker_purity` pooled over files."""
        return self._pooled_share("single_pure", "single_speech")

    @property
    def real_time_factor(self) -> float:
        """Processing time of the whole pipeline / audio duration (NaN without a file)."""
        return self._sum("processing_time") / self.duration if self.files else math.nan

    @property
    def segmentation_real_time_factor(self) -> float:
        """Time spent reading audio and running the segmentation model / audio duration."""
        return self._sum("segmentation_time") / self.duration if self.files else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Totals and per-file rows, as plain numbers (for JSON)."""
        totals = {
            name: getattr(self, name)
            for name in ("der", "missed", "false_alarm", "confusion", "reference", "duration",
                         "real_time_factor", "segmentation_real_time_factor", "local_purity",
                         "single_speaker_purity")
        }
        return {
            "collar": self.collar,
            "skip_overlap": self.skip_overlap,
            "total": totals,
            "files": [{**asdict(score), "der": score.der, "local_purity": score.local_purity,
                       "single_speaker_purity": score.single_speaker_purity}
                      for score in self.files],
            "rttm": [str(path) for path in self.rttm],
            "failed": [asdict(failure) for failure in self.failed],
        }

    def table(self) -> str:
        """Per-file and total figures as a text table (rates in % of reference speech)."""

        def row(name: str, score) -> str:
            reference = score.reference or float("nan")
            purity = score.local_purity
            return (
                f"{name:<24} {100 * score.der:7.2f} {100 * score.missed / reference:7.2f} "
                f"{100 * score.false_alarm / reference:7.2f} "
                f"{100 * score.confusion / reference:7.2f} {score.reference:9.1f} "
                + (f"{100 * purity:8.1f}" if purity is not None else f"{'-':>8}")
            )

        header = (f"{'file':<24} {'DER%':>7} {'miss%':>7} {'FA%':>7} {'conf%':>7} {'speech s':>9} "
                  f"{'purity%':>8}")
        lines = [header, "-" * len(header)]
        lines += [row(score.uri[:24], score) for score in self.files]
        lines += ["-" * len(header), row("TOTAL", self)]
        lines.append(
            f"collar {self.collar} s, skip_overlap {self.skip_overlap}; real-time factor: "
            f"pipeline {self.real_time_factor:.4f}, segmentation "
            f"{self.segmentation_real_time_factor:.4f}"
        )
        lines += [f"failed: {failure.uri}: {failure.error}" for failure in self.failed]
        if self.local_purity is not None:
            lines.append(
                "purity: share of each local speaker's speech (per chunk of the segmentation) "
                "spoken by its main reference speaker; all speech of a chunk in one local "
                f"speaker would give {100 * self.single_speaker_purity:.1f} %, the reference 100 %"
            )
        return "\n".join(lines)


def as_written_in_rttm(annotation: Annotation) -> Annotation:
    """`annotation` with its times rounded as RTTM files write them (start and duration, ms)."""
    rounded = Annotation(uri=annotation.uri, modality=annotation.modality)
    for segment, track, label in annotation.itertracks(yield_label=True):
        start, duration = round(segment.start, 3), round(segment.duration, 3)
        if duration > 0:
            rounded[Segment(start, start + duration), track] = label
    return rounded


def local_speaker_purity(
    segmentations: SlidingWindowFeature, file: Mapping, frames: SlidingWindow
) -> tuple[float, float, float, float]:
    """How much of each local speaker's speech its main reference speaker spoke

    A segmentation model labels speakers within each chunk ("local speakers"); the pipeline
    embeds each local speaker and clusters the embeddings. A local speaker whose speech
    mixes two people gives an embedding of neither, which no clustering can place, while
    `OracleClustering` still maps it to the one who spoke most: the oracle DER charges only
    the minority part, the pipeline can lose all of it.

    Parameters
    ----------
    segmentations : (num_chunks, num_frames, num_speakers) SlidingWindowFeature
        Segmentation of `file`, as the pipeline's "segmentation" step gives it: binary for
        powerset models; scores of other models count as speech above 0.5.
    file : dict
        The file, with its reference "annotation" (over the whole file: frames where nobody
        speaks, the local speakers' false alarms, count as impure; "annotated" is ignored).
    frames : SlidingWindow
        Frames of the segmentation model (`model.receptive_field`).

    Returns
    -------
    speech, pure : float
        Active frames of local speakers summed over chunks, and those on which the local
        speaker's main reference speaker (the one speaking on most of them) speaks, both in
        seconds of frames. purity = pure / speech.
    single_speech, single_pure : float
        The same for a segmentation that gives all speech of each chunk to one local
        speaker: the floor of any segmentation that detects speech.
    """
    reference = oracle_segmentation(file, segmentations.sliding_window, frames=frames).data
    local = np.nan_to_num(segmentations.data, nan=0.0) > 0.5
    num_chunks = min(len(local), len(reference))
    num_frames = min(local.shape[1], reference.shape[1])
    local = local[:num_chunks, :num_frames].astype(np.float64)
    reference = reference[:num_chunks, :num_frames].astype(np.float64)
    # frames on which local speaker s and reference speaker k both speak, per chunk
    together = np.einsum("cts,ctk->csk", local, reference)
    pure = together.max(axis=2).sum() if together.size else 0.0
    # one local speaker active wherever someone speaks: it shares with speaker k k's frames
    single_speech = (reference.sum(axis=2) > 0).sum()
    single_pure = reference.sum(axis=1).max(axis=1).sum() if reference.size else 0.0
    step = frames.step
    return (float(local.sum() * step), float(pure * step),
            float(single_speech * step), float(single_pure * step))


class _StepClock:
    """Pipeline hook that records when the segmentation step ends, and the segmentation."""

    def __init__(self):
        self.segmentation_end: float | None = None
        self.segmentation: SlidingWindowFeature | None = None

    def __call__(self, step_name: str, step_artifact: Any, file=None, total=None, completed=None):
        # per-batch progress calls carry no artifact; the final one carries the segmentation
        if step_name == "segmentation" and step_artifact is not None:
            self.segmentation_end = time.perf_counter()
            self.segmentation = step_artifact


def evaluate_pipeline(
    pipeline,
    files: Iterable[Mapping],
    collar: float = 0.0,
    skip_overlap: bool = False,
    num_speakers: Literal["auto", "oracle"] = "auto",
    rttm_dir: str | os.PathLike | None = None,
    progress: bool = True,
    description: str = "Diarizing",
    keep_going: bool = False,
) -> EvaluationReport:
    """Score a diarization pipeline with pyannote.metrics' DiarizationErrorRate

    Parameters
    ----------
    pipeline : pyannote.audio SpeakerDiarization pipeline
        Instantiated pipeline (e.g. `load_pipeline(directory)`); with OracleClustering, this
        scores the segmentation model alone.
    files : iterable of dict
        Files with "annotation" (and "annotated", the scored regions, when known), e.g.
        `get_files(protocol, "test")`.
    collar : float, optional
        Forgiveness collar in seconds around reference boundaries. Defaults to 0.
    skip_overlap : bool, optional
        Do not score overlapped speech regions. Defaults to False.
    num_speakers : {"auto", "oracle"}, optional
        Let the pipeline find the number of speakers (default), or give it the reference one.
    rttm_dir : path, optional
        Write one RTTM file per file (<uri>.rttm) into this directory.
    progress : bool, optional
        Show a progress bar (one step per file). Defaults to True.
    description : str, optional
        What the progress bar says it does. Defaults to "Diarizing".
    keep_going : bool, optional
        A file that cannot be diarized or scored (an error of any kind but an interruption)
        is listed in the report's `failed`, in one line, and left out of the totals, while
        the other files are scored. Defaults to False: its error is raised.

    Returns
    -------
    report : EvaluationReport
        With each file's local-speaker purity (see `local_speaker_purity`) when the pipeline
        reports its segmentation to hooks, as pyannote's SpeakerDiarization does.
    """
    if collar < 0:
        raise ValueError(f"collar={collar}: expected a duration >= 0 s.")
    if num_speakers not in ("auto", "oracle"):
        raise ValueError(f"num_speakers={num_speakers!r}: expected 'auto' or 'oracle'.")
    files = list(files)
    if rttm_dir is not None:
        rttm_dir = Path(rttm_dir)
        rttm_dir.mkdir(parents=True, exist_ok=True)

    metric = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    audio = Audio()
    # frames of the segmentation model, to measure the local speakers' purity
    frames = getattr(getattr(getattr(pipeline, "_segmentation", None), "model", None),
                     "receptive_field", None)
    scores, rttms, failed = [], [], []
    bar = tqdm(files, desc=description, unit="file", disable=not progress)
    for file in bar:
        bar.set_postfix_str(file["uri"])
        try:
            score, hypothesis = _score(pipeline, file, metric, audio, frames, num_speakers)
        except Exception as error:
            if not keep_going:
                raise
            failed.append(FileFailure(file["uri"], _one_line(error)))
            continue
        scores.append(score)
        if rttm_dir is not None:
            path = rttm_dir / f"{file['uri'].replace('/', '_')}.rttm"
            rttms.append(write_rttm(hypothesis, path))
    return EvaluationReport(scores, collar=collar, skip_overlap=skip_overlap, rttm=rttms,
                            failed=failed)


def write_rttm(annotation: Annotation, path: str | os.PathLike) -> Path:
    """`annotation` as an RTTM file, written next to `path` and renamed into place."""
    text = io.StringIO()
    annotation.write_rttm(text)
    return write_atomically(path, lambda file: file.write(text.getvalue().encode()))


def _score(pipeline, file: Mapping, metric: DiarizationErrorRate, audio: Audio,
           frames: SlidingWindow | None, num_speakers: str) -> tuple[FileScore, Annotation]:
    """The score of one file, and the diarization scored (as its RTTM file writes it)."""
    reference: Annotation = file["annotation"]
    options = {"num_speakers": len(reference.labels())} if num_speakers == "oracle" else {}
    clock = _StepClock()
    start = time.perf_counter()
    output = pipeline(file, hook=clock, **options)
    end = time.perf_counter()
    hypothesis = output if isinstance(output, Annotation) else output.speaker_diarization
    # score what the RTTM file holds, so that re-scoring it gives the same figures
    hypothesis = as_written_in_rttm(hypothesis)

    components = metric(reference, hypothesis, uem=file.get("annotated"), detailed=True)
    purity = (None,) * 4
    if clock.segmentation is not None and frames is not None:
        purity = local_speaker_purity(clock.segmentation, file, frames)
    score = FileScore(
        uri=file["uri"],
        duration=audio.get_duration(file),
        reference=components["total"],
        missed=components["missed detection"],
        false_alarm=components["false alarm"],
        confusion=components["confusion"],
        processing_time=end - start,
        segmentation_time=(clock.segmentation_end or end) - start,
        local_speech=purity[0],
        local_pure=purity[1],
        single_speech=purity[2],
        single_pure=purity[3],
    )
    return score, hypothesis


def _one_line(error: Exception) -> str:
    """`error` as one line; its type too unless it is a user's error (a bad value or file)."""
    message = " ".join(str(error).split())
    return message if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {message}"
