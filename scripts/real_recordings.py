"""How tests/data/real/ was made: real AMI recordings with their reference, from two checkouts.

    python scripts/real_recordings.py PYANNOTE_AUDIO_CHECKOUT DIARIZEN_CHECKOUT [--output tests/data/real]

PYANNOTE_AUDIO_CHECKOUT: a checkout of github.com/pyannote/pyannote-audio (MIT; read at its
4.0.7 release). Its tests/data/ holds 30 s excerpts of AMI meetings (float32 WAV, 16 kHz, mono)
with their references (debug.{train,development,test}.{rttm,uem}); EXCERPTS are copied as
16-bit WAV (their samples are multiples of 1/32768: the copy is exact, and half the size).

DIARIZEN_CHECKOUT: a checkout of github.com/BUTSpeechFIT/DiariZen (MIT). Its
example/EN2002a_30s.wav is stored already (tests/data/diarizen/EN2002a_30s.wav, checked here
to be the same bytes); its reference is cut from DiariZen's AMI test reference
(recipes/diar_ssl/data/AMI_AliMeeting_AISHELL4/test/AMI/rttm) to EN2002A_OFFSET s on and
shifted to start at 0. The script checks the offset against the audio's energy: how much
louder the audio is where the shifted reference has speech than where it has none, at the
offset, 1 s before and after it, and at every offset of the meeting's first 10 minutes (10 ms
steps); and, for comparison, the same contrast for the pyannote excerpts and their references.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from real_recordings import (  # noqa: E402
    DATABASE,
    EN2002A_OFFSET,
    EXCERPTS,
    RECORDINGS,
    SAMPLE_RATE,
    STEP,
    audio_path,
    contrast,
    log_energy,
    speech_mask,
)

DIARIZEN_REFERENCE = "recipes/diar_ssl/data/AMI_AliMeeting_AISHELL4/test/AMI/rttm"
SCAN = 600  # seconds of the meeting where the excerpt is looked for


def git_show(checkout: Path, path: str) -> bytes:
    return subprocess.run(["git", "-C", str(checkout), "show", f"HEAD:{path}"], check=True,
                          capture_output=True).stdout


def read_float_wav(data: bytes) -> np.ndarray:
    import io

    from scipy.io import wavfile

    rate, samples = wavfile.read(io.BytesIO(data))
    if rate != SAMPLE_RATE or samples.dtype != np.float32 or samples.ndim != 1:
        raise ValueError(f"{rate} Hz {samples.dtype} {samples.shape}: expected 16 kHz mono float32")
    return samples


def to_int16(samples: np.ndarray) -> np.ndarray:
    scaled = samples.astype(np.float64) * 32768
    if not np.array_equal(scaled, np.round(scaled)) or np.abs(scaled).max() > 32767:
        raise ValueError("samples are not 16-bit values: a 16-bit copy would not be exact")
    return scaled.astype(np.int16)


def rttm_lines(text: str, uri: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.split()[1:2] == [uri]]


def turns(lines: list[list[str]]) -> list[tuple[float, float]]:
    return [(float(fields[3]), float(fields[3]) + float(fields[4])) for fields in lines]


def cut_and_shift(lines: list[list[str]], uri: str, start: float, duration: float) -> list[str]:
    """RTTM lines of the turns within [start, start + duration], cropped to it, shifted to 0."""
    out = []
    for fields in lines:
        begin, end = float(fields[3]), float(fields[3]) + float(fields[4])
        begin, end = max(begin, start) - start, min(end, start + duration) - start
        if end - begin > 1e-9:
            out.append(f"SPEAKER {uri} 1 {begin:.3f} {end - begin:.3f} <NA> <NA> {fields[7]} <NA> <NA>")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyannote_audio_checkout", type=Path)
    parser.add_argument("diarizen_checkout", type=Path)
    parser.add_argument("--output", type=Path, default=DATABASE.parent)
    args = parser.parse_args()
    from scipy.io import wavfile

    args.output.mkdir(parents=True, exist_ok=True)
    references = "".join(
        git_show(args.pyannote_audio_checkout, f"tests/data/debug.{subset}.rttm").decode()
        for subset in ("train", "development", "test"))
    rttm, uem = [], []
    for uri in EXCERPTS:
        samples = read_float_wav(git_show(args.pyannote_audio_checkout, f"tests/data/{uri}.wav"))
        wavfile.write(audio_path(uri), SAMPLE_RATE, to_int16(samples))
        lines = rttm_lines(references, uri)
        rttm += [" ".join(fields) for fields in lines]
        duration = len(samples) / SAMPLE_RATE
        uem.append(f"{uri} NA 0.000 {duration:.3f}")
        energy = log_energy(samples)
        print(f"{uri}: reference speech is {contrast(energy, speech_mask(turns(lines), len(energy)))[0]:.1f}"
              " dB louder than reference silence")

    uri = "EN2002a_30s"
    example = git_show(args.diarizen_checkout, "example/EN2002a_30s.wav")
    if example != audio_path(uri).read_bytes():
        raise ValueError(f"DiariZen's example/EN2002a_30s.wav differs from {audio_path(uri)}")
    rate, samples = wavfile.read(audio_path(uri))
    duration = len(samples) / rate
    meeting = rttm_lines(git_show(args.diarizen_checkout, DIARIZEN_REFERENCE).decode(), "EN2002a")
    rttm += cut_and_shift(meeting, uri, EN2002A_OFFSET, duration)
    uem.append(f"{uri} NA 0.000 {duration:.3f}")
    energy = log_energy(samples.astype(np.float64) / 32768)
    meeting_speech = speech_mask(turns(meeting), round(float(SCAN) / STEP) + len(energy))
    scan = contrast(energy, meeting_speech)
    at, second = round(EN2002A_OFFSET / STEP), round(1.0 / STEP)
    near = at - 5 * second + int(np.nanargmax(scan[at - 5 * second:at + 5 * second + 1]))
    silence = int((~meeting_speech[at:at + len(energy)]).sum())
    print(f"{uri}: DiariZen's reference from {EN2002A_OFFSET} s on: its speech is {scan[at]:.1f} dB "
          f"louder than its silence ({silence * STEP:.1f} s of it); shifted by -1 s / +1 s: "
          f"{scan[at - second]:.1f} / {scan[at + second]:.1f} dB; the best offset within 5 s: "
          f"{near * STEP:.2f} s; offsets of 0-{SCAN} s (10 ms steps) scoring higher: "
          f"{int((scan > scan[at]).sum())} of {int(np.isfinite(scan).sum())} (median "
          f"{np.nanmedian(scan):.1f} dB)")

    (args.output / "real.rttm").write_text("\n".join(rttm) + "\n")
    (args.output / "real.uem").write_text("\n".join(uem) + "\n")
    (args.output / "real.lst").write_text("\n".join(RECORDINGS) + "\n")


if __name__ == "__main__":
    main()
