"""Real recordings with their references: tests/data/real/ (see its README.md for sources and
licences, scripts/real_recordings.py for how it was made).

Four 30 s excerpts of AMI meetings (16 kHz, 16-bit mono): three of pyannote-audio's test
files (dev01: two speakers with pauses; tst01: four speakers, 6 s of speech in 30 s; trn04:
three speakers after 14 s of silence) and DiariZen's example, EN2002a from 184.32 s (four
speakers, much overlap), whose audio is stored with DiariZen's fixtures.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"
DATABASE = DATA / "real" / "database.yml"
PROTOCOL = "Real.SpeakerDiarization.excerpts"
SAMPLE_RATE = 16000
# pyannote-audio's tests/data/ files copied here
EXCERPTS = ("dev01", "tst01", "trn04")
# where DiariZen's example/EN2002a_30s.wav starts in the meeting EN2002a, in seconds
EN2002A_OFFSET = 184.32
RECORDINGS = (*EXCERPTS, "EN2002a_30s")


def audio_path(uri: str) -> Path:
    """The WAV file of a recording (the template of database.yml, spelt out)."""
    return DATA / ("diarizen" if uri == "EN2002a_30s" else "real") / f"{uri}.wav"


def real_files() -> list[dict]:
    """The recordings as a protocol gives them: uri, audio, annotation, annotated."""
    from pyannote_wavlm_prune.pipelines.evaluate import get_files

    return get_files(PROTOCOL, "test", databases=[DATABASE])
