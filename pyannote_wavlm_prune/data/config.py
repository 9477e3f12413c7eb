"""The parameters of a simulated-conversation corpus: `SimulationConfig` and its presets."""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SUBSETS = ("train", "development", "test")

# Conversation-level realised overlap further than this from the request is reported.
OVERLAP_TOLERANCE = 0.05


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of a simulated corpus (all of them: they are its identity).

    Parameters
    ----------
    name : str
        Protocol name (``<database>.SpeakerDiarization.<name>``) and uri prefix.
    database : str, optional
        Database name. Defaults to "Simulated".
    seed : int, optional
        Seed of every random choice. Defaults to 0.
    conversations : (int, int, int), optional
        Number of conversations in train, development and test. Defaults to (6, 2, 2).
    duration : (float, float), optional
        Range of conversation lengths, in seconds; a conversation may run up to 25%
        (or 8 s) longer to reach its overlap ratio. Defaults to (12.0, 20.0).
    num_speakers : int or (int, int), optional
        Speakers per conversation, or a range of them (at least 2). Defaults to (2, 3).
    speakers_per_subset : (int, int, int), optional
        Size of the train, development and test speaker pools (pools are disjoint).
        Defaults to (8, 4, 4).
    utterances_per_speaker : int, optional
        Utterances synthesised (espeak-ng) or read (folder) per speaker. Defaults to 8.
    overlap : float, optional
        Overlap ratio, in [0, 1): time where 2+ speakers talk over time where 1+
        speakers talk, in each conversation; reached within 0.05 (nearly always
        0.01) up to 0.5, may fall short above (two speakers cannot talk over each
        other that much).
        Defaults to 0.2.
    pause : (float, float), optional
        Range of pauses between turns, in seconds. Defaults to (0.1, 1.0).
    noise_snr : float or (float, float), optional
        Signal-to-noise ratio of additive colored noise, or a range of them, in dB.
        Defaults to None (no noise).
    reverb : bool, optional
        Give each speaker a synthetic room response. Defaults to False.
    rt60 : (float, float), optional
        Range of reverberation times when `reverb`, in seconds. Defaults to (0.2, 0.6).
    source : str, optional
        Folder of ``<speaker>/*.wav|flac`` single-speaker recordings. Defaults to
        None: espeak-ng voices.
    max_utterance : float, optional
        Longest utterance read from `source`, in seconds. Defaults to 8.0.
    activity_threshold : float, optional
        A 10 ms frame of an utterance is speech when within this many dB of the
        utterance's loudest frame. Defaults to -40.0.

    Raises
    ------
    ValueError
        When a value is out of range; the message names it.
    """

    name: str = "tiny"
    database: str = "Simulated"
    seed: int = 0
    conversations: tuple[int, int, int] = (6, 2, 2)
    duration: tuple[float, float] = (12.0, 20.0)
    num_speakers: int | tuple[int, int] = (2, 3)
    speakers_per_subset: tuple[int, int, int] = (8, 4, 4)
    utterances_per_speaker: int = 8
    overlap: float = 0.2
    pause: tuple[float, float] = (0.1, 1.0)
    noise_snr: float | tuple[float, float] | None = None
    reverb: bool = False
    rt60: tuple[float, float] = (0.2, 0.6)
    source: str | None = None
    max_utterance: float = 8.0
    activity_threshold: float = -40.0

    def __post_init__(self) -> None:
        # normalise first (ints to ranges, lists to tuples, folders to absolute
        # paths) so that equal corpora have equal parameters
        def set_(field: str, value: Any) -> None:
            object.__setattr__(self, field, value)

        # numpy scalars become Python numbers: parameters are compared as JSON
        def plain(value: Any, kind: type) -> Any:
            if isinstance(value, np.integer | np.floating) or (
                kind is float and isinstance(value, int) and not isinstance(value, bool)
            ):
                return kind(value)
            return value

        if isinstance(self.num_speakers, numbers.Integral):
            set_("num_speakers", (self.num_speakers, self.num_speakers))
        if isinstance(self.noise_snr, numbers.Real):
            set_("noise_snr", (self.noise_snr, self.noise_snr))
        for field, kind in (("seed", int), ("utterances_per_speaker", int), ("overlap", float),
                            ("max_utterance", float), ("activity_threshold", float)):  # fmt: skip
            set_(field, plain(getattr(self, field), kind))
        for field, kind in (("conversations", int), ("num_speakers", int),
                            ("speakers_per_subset", int), ("duration", float), ("pause", float),
                            ("noise_snr", float), ("rt60", float)):  # fmt: skip
            value = getattr(self, field)
            if value is not None and not isinstance(value, tuple | list):
                raise ValueError(f"{field} must be a tuple of {kind.__name__}, got {value!r}")
            if value is not None:
                set_(field, tuple(plain(v, kind) for v in value))
        if self.source is not None:
            set_("source", str(Path(self.source).expanduser().resolve()))
        self._validate()

    def _validate(self) -> None:
        for field in ("name", "database"):
            value = getattr(self, field)
            if (
                not isinstance(value, str)
                or not value
                or not value.replace("-", "").replace("_", "").isalnum()
            ):
                raise ValueError(
                    f"{field} must be a non-empty identifier (letters, digits, -, _), got {value!r}"
                )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        _check_range("duration", self.duration, low=0.0, strict=True)
        _check_range("pause", self.pause, low=0.0, strict=False)
        _check_range("rt60", self.rt60, low=0.0, strict=True)
        if self.noise_snr is not None:
            _check_range("noise_snr", self.noise_snr, low=-np.inf, strict=False)
        if not (isinstance(self.overlap, float) and 0.0 <= self.overlap < 1.0):
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if len(self.num_speakers) != 2 or self.num_speakers[0] > self.num_speakers[1]:
            raise ValueError(
                f"num_speakers must be an int or a (min, max) pair, got {self.num_speakers!r}"
            )
        if self.num_speakers[0] < 2:
            raise ValueError(
                f"num_speakers must be at least 2 per conversation, got {self.num_speakers[0]}"
            )
        for field in ("conversations", "speakers_per_subset"):
            value = getattr(self, field)
            if len(value) != 3 or any(not isinstance(n, int) or n < 1 for n in value):
                raise ValueError(
                    f"{field} must be 3 positive integers (train, development, test), got {value!r}"
                )
        for subset, pool in zip(SUBSETS, self.speakers_per_subset, strict=True):
            if pool < self.num_speakers[1]:
                raise ValueError(
                    f"speakers_per_subset gives {subset} {pool} speakers, fewer than "
                    f"num_speakers={self.num_speakers[1]} in one conversation"
                )
        if self.utterances_per_speaker < 1:
            raise ValueError(
                f"utterances_per_speaker must be at least 1, got {self.utterances_per_speaker!r}"
            )
        if self.max_utterance <= 0:
            raise ValueError(f"max_utterance must be positive, got {self.max_utterance!r}")
        if self.activity_threshold >= 0:
            raise ValueError(
                f"activity_threshold must be negative (dB below the loudest frame), "
                f"got {self.activity_threshold!r}"
            )

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> SimulationConfig:
        """Return the parameters of `preset` (a key of `PRESETS`) with `overrides`.

        Raises
        ------
        ValueError
            When `preset` is unknown or an override names no parameter.
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}, expected one of {sorted(PRESETS)}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown simulation parameter(s) {unknown}, expected some of {sorted(known)}"
            )
        return cls(**{**PRESETS[preset], **overrides})

    @property
    def protocol(self) -> str:
        """Full protocol name, e.g. "Simulated.SpeakerDiarization.tiny"."""
        return f"{self.database}.SpeakerDiarization.{self.name}"

    def uri(self, subset: str, index: int) -> str:
        """Return the uri of conversation `index` of `subset` (unique across presets)."""
        return f"{self.name}_{subset}_{index:03d}"

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as JSON-compatible values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS: dict[str, dict[str, Any]] = {
    # unit tests: builds in a couple of seconds
    "tiny": dict(
        name="tiny",
        conversations=(6, 2, 2),
        duration=(12.0, 20.0),
        num_speakers=(2, 3),
        speakers_per_subset=(8, 4, 4),
        utterances_per_speaker=8,
        overlap=0.2,
    ),
    # CPU demo: enough to train a small segmentation model in minutes
    "quickstart": dict(
        name="quickstart",
        conversations=(40, 6, 6),
        duration=(25.0, 35.0),
        num_speakers=(2, 4),
        speakers_per_subset=(24, 8, 8),
        utterances_per_speaker=12,
        overlap=0.2,
    ),
    # a speaker embedding's training set: many voices, each clean (no overlap); only its
    # training subset serves (the development and test subsets are the smallest allowed)
    "voices": dict(
        name="voices",
        conversations=(100, 1, 1),
        duration=(12.0, 20.0),
        num_speakers=4,
        speakers_per_subset=(200, 4, 4),
        utterances_per_speaker=6,
        overlap=0.0,
    ),
}


def _check_range(field: str, value: tuple[float, float], low: float, strict: bool) -> None:
    ok = (
        len(value) == 2 and value[0] <= value[1] and (value[0] > low if strict else value[0] >= low)
    )
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(
            f"{field} must be a (min, max) range with min <= max and min {bound}, got {value!r}"
        )

