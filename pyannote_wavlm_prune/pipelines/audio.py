"""Audio intake: files read, checked and decoded the same way on every pyannote.audio release.

pyannote.audio 4.0 chose channels with the `mono` keyword of `Audio`; 4.1 removed it (a channel
policy replaced it) and renamed the method that downmixed. The project names neither: it reads
every channel itself (`read_channels`) and downmixes what pyannote's `Audio` gives
(`DownmixedAudio`), using only what both releases have (`Audio(sample_rate=...)`, its
`__call__`, `crop`, `get_duration` and `validate_file`).

What the pipeline reads (`readable`): a file checked before any work (readable, at least one
frame long, finite samples), decoded once into memory when its codec cannot be cropped to the
sample (`seeks_exactly`, `DecodedFile`); one of its channels alone when asked
(`select_channel`). Errors name the file (`describe_file`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from io import IOBase

import torch
from pyannote.audio import Audio
from pyannote.audio.core.io import AudioFile, get_audio_metadata
from pyannote.core import Segment


def downmix(waveform: torch.Tensor) -> torch.Tensor:
    """(1, samples): the mean of the channels of a (channels, samples) waveform, as pyannote's
    "downmix" computes it (a mono waveform comes back with the same samples)."""
    return waveform if waveform.shape[0] == 1 else waveform.mean(dim=0, keepdim=True)


def read_channels(file: AudioFile) -> tuple[torch.Tensor, int]:
    """(channels, samples) waveform of every channel of `file`, at its own sample rate

    In memory ({"waveform": ..., "sample_rate": ...}) as it is; on disk (or a file-like
    object) decoded whole by torchcodec, as pyannote's `Audio` decodes it.
    """
    file = Audio.validate_file(file)
    if "waveform" in file:
        return file["waveform"], file["sample_rate"]
    from torchcodec.decoders import AudioDecoder

    samples = AudioDecoder(file["audio"]).get_all_samples()
    if isinstance(file["audio"], IOBase):
        file["audio"].seek(0)  # as pyannote does: the caller may read it again
    return samples.data, samples.sample_rate


class DownmixedAudio(Audio):
    """pyannote's `Audio`, resampled to `sample_rate`, whose waveforms are downmixed to mono

    What pyannote 4.0's `Audio` gave when told to downmix, without that keyword: the channels
    are averaged after resampling rather than before, the same linear map (the samples may
    differ in their last bits where a file is resampled).
    """

    def __init__(self, sample_rate: int | None = None):
        super().__init__(sample_rate=sample_rate)

    def __call__(self, file: AudioFile) -> tuple[torch.Tensor, int]:
        waveform, sample_rate = super().__call__(file)
        return downmix(waveform), sample_rate

    def crop(self, file: AudioFile, segment: Segment, mode: str = "raise"
             ) -> tuple[torch.Tensor, int]:
        waveform, sample_rate = super().crop(file, segment, mode=mode)
        return downmix(waveform), sample_rate


class AudioDecodingError(ValueError):
    """An audio file that exists but cannot be read."""


class NonFiniteAudioError(ValueError):
    """Audio holding NaN or infinite samples."""


def seeks_exactly(codec: str | None) -> bool:
    """Whether torchcodec reads any excerpt of a stream of `codec` to the sample (PCM, FLAC)

    Seeking into compressed streams (MP3, Vorbis, AAC, Opus, ...) starts at a frame boundary:
    pyannote's `Audio.crop` then gets a few samples more or fewer than it asked for and
    raises ("... 30895 samples instead of the expected 32000").
    """
    return codec is not None and (codec.startswith("pcm_") or codec == "flac")


class DecodedFile(MutableMapping):
    """`file` with its audio decoded once, in memory: "waveform" and "sample_rate" (and no
    "channel", already selected) are its own; every other key is read from and written to
    `file`, so that what pyannote caches in it (an optimized pipeline's segmentation) stays."""

    OWN = ("waveform", "sample_rate")

    def __init__(self, file: Mapping, waveform: torch.Tensor, sample_rate: int):
        self.file = file
        self.decoded = {"waveform": waveform, "sample_rate": sample_rate}

    def __getitem__(self, key):
        if key in self.OWN:
            return self.decoded[key]
        if key == "channel":
            raise KeyError(key)
        return self.file[key]

    def __setitem__(self, key, value):
        if key in self.OWN:
            self.decoded[key] = value
        else:
            self.file[key] = value

    def __delitem__(self, key):
        if key in self.OWN or key == "channel":
            raise KeyError(f"{key} of a decoded file cannot be removed")
        del self.file[key]

    def __iter__(self):
        yield from self.OWN
        yield from (key for key in self.file if key not in (*self.OWN, "channel"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

def select_channel(file: AudioFile, channel: int | None) -> AudioFile:
    """`file`, or its `channel` alone as an in-memory waveform when one is chosen."""
    if channel is None:
        return file
    waveform, sample_rate = read_channels(file)
    if channel >= waveform.shape[0]:
        raise ValueError(f"channel={channel}: {file.get('uri', '?')!r} has "
                         f"{waveform.shape[0]} channel(s), expected more than {channel}.")
    selected = {key: value for key, value in file.items() if key != "audio"}
    selected.update(waveform=waveform[channel:channel + 1], sample_rate=sample_rate)
    return selected


def readable(file: AudioFile, frame: float) -> tuple[Mapping, float]:
    """`file` as the pipeline reads it, and its duration: checked (`check_audio`, at least
    `frame` seconds: one frame of the segmentation model), and decoded once into memory unless
    its codec seeks exactly (`seeks_exactly`)."""
    file, duration, codec = check_audio(file, frame)
    if "waveform" in file:
        check_finite(file, file["waveform"])
    elif not seeks_exactly(codec):
        file = decode(file)
        # what the decoder gives, which a compressed file's header may only estimate
        duration = file["waveform"].shape[-1] / file["sample_rate"]
    return file, duration


def decode(file: Mapping) -> DecodedFile:
    """`file` with its whole audio in memory, as pyannote's `preload` reads it; checked."""
    try:
        waveform, sample_rate = Audio()(file)
    except Exception as error:  # torchcodec raises RuntimeError or ValueError
        raise AudioDecodingError(f"Cannot decode audio file {describe_file(file)}: {error}. "
                                 "Expected audio that FFmpeg can read (wav, flac, mp3, ...).") \
            from error
    check_finite(file, waveform)
    return DecodedFile(file, waveform, sample_rate)


def check_finite(file: Mapping, waveform: torch.Tensor) -> None:
    """Raise NonFiniteAudioError, naming `file`, when `waveform` holds NaN or infinities."""
    finite = torch.isfinite(waveform)
    if not finite.all():
        raise NonFiniteAudioError(
            f"Audio {describe_file(file)} holds {int((~finite).sum())} NaN or infinite samples "
            f"(of {finite.numel()}): expected finite samples."
        )


def check_audio(file: AudioFile, frame: float) -> tuple[Mapping, float, str | None]:
    """`file` validated (a Mapping), its duration and codec (None in memory); a clear
    error for audio that cannot be read or is shorter than `frame` seconds (one frame of the
    segmentation model)."""
    codec = None
    try:
        file = Audio.validate_file(file)
        if "waveform" in file:
            duration = Audio().get_duration(file)
        else:
            metadata = get_audio_metadata(file)
            duration, codec = metadata.duration_seconds_from_header, metadata.codec
    except Exception as error:  # torchcodec raises RuntimeError or ValueError
        raise AudioDecodingError(
            f"Cannot decode audio file {describe_file(file)}: {error}. Expected audio "
            "that FFmpeg can read (wav, flac, mp3, ...)."
        ) from error
    # an empty file has no duration at all (None), not a zero one
    if duration is None or not duration > 0:
        raise ValueError(
            f"Audio {describe_file(file)} is empty or of unknown duration ({duration}): "
            f"expected at least {frame:.4f} s (one frame of the segmentation model)."
        )
    if duration < frame:
        raise ValueError(
            f"Audio {file.get('uri', '?')!r} lasts {duration:.4f} s: the segmentation model "
            f"needs at least {frame:.4f} s (one frame); audio: {describe_file(file)}."
        )
    return file, duration, codec


def describe_file(file: AudioFile) -> str:
    """How errors name `file`: its path ("in-memory waveform", "stream") and its uri."""
    if not isinstance(file, Mapping):
        return str(file) if isinstance(file, (str, os.PathLike)) else "stream"
    audio = file.get("audio")
    if isinstance(audio, (str, os.PathLike)):
        where = str(audio)
    else:
        where = "stream" if audio is not None else "in-memory waveform"
    return f"{where} (uri {file.get('uri', '?')!r})"
