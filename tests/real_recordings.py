"""Real recordings with their references: tests/data/real/ (see its README.md for sources and
licences, scripts/real_recordings.py for how it was made).

Four 30 s excerpts of AMI meetings (16 kHz, 16-bit mono): three of pyannote-audio's test
files (dev01: two speakers with pauses; tst01: four speakers, 6 s of speech in 30 s; trn04:
three speakers after 14 s of silence) and DiariZen's example, EN2002a from 184.32 s (four
speakers, much overlap), whose audio is stored with DiariZen's fixtures.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
DATABASE = DATA / "real" / "database.yml"
PROTOCOL = "Real.SpeakerDiarization.excerpts"
SAMPLE_RATE = 16000
# pyannote-audio's tests/data/ files copied here
EXCERPTS = ("dev01", "tst01", "trn04")
# where DiariZen's example/EN2002a_30s.wav starts in the meeting EN2002a, in seconds
EN2002A_OFFSET = 184.32
RECORDINGS = (*EXCERPTS, "EN2002a_30s")
STEP = 0.01  # seconds per energy frame


def audio_path(uri: str) -> Path:
    """The WAV file of a recording (the template of database.yml, spelt out)."""
    return DATA / ("diarizen" if uri == "EN2002a_30s" else "real") / f"{uri}.wav"


def real_files() -> list[dict]:
    """The recordings as a protocol gives them: uri, audio, annotation, annotated."""
    from pyannote_wavlm_prune.pipelines.evaluate import get_files

    return get_files(PROTOCOL, "test", databases=[DATABASE])


def speech_mask(turns: Iterable[tuple[float, float]], frames: int, start: float = 0.0) -> np.ndarray:
    """Which of `frames` STEP s frames from `start` (s) lie in a turn (start, end) (s)."""
    mask = np.zeros(frames, dtype=bool)
    for begin, end in turns:
        first, last = round((begin - start) / STEP), round((end - start) / STEP)
        mask[max(first, 0):max(min(last, frames), 0)] = True
    return mask


def log_energy(samples: np.ndarray) -> np.ndarray:
    """Energy in dB of 25 ms windows every STEP s of `samples` (mono, SAMPLE_RATE)."""
    hop, window = int(STEP * SAMPLE_RATE), int(0.025 * SAMPLE_RATE)
    frames = len(samples) // hop
    padded = np.pad(samples.astype(np.float64), (0, window))
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:frames]
    return 10 * np.log10(np.mean(windows ** 2, axis=1) + 1e-10)


def contrast(energy: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """How much louder (dB) the audio is where a reference has speech than where it has none,
    for each offset of the reference: element k compares `energy` with
    `speech[k:k + len(energy)]` (a speech mask longer than the audio)."""
    frames = len(energy)
    speech = speech.astype(np.float64)
    in_speech = np.correlate(speech, energy, mode="valid")  # energy summed over speech frames
    count = np.convolve(speech, np.ones(frames), mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return in_speech / count - (energy.sum() - in_speech) / (frames - count)
