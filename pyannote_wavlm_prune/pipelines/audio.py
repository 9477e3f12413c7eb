"""Reading audio the same way on every pyannote.audio release the project admits.

pyannote.audio 4.0 chose channels with the `mono` keyword of `Audio`; 4.1 removed it (a channel
policy replaced it) and renamed the method that downmixed. The project names neither: it reads
every channel itself (`read_channels`) and downmixes what pyannote's `Audio` gives
(`DownmixedAudio`), using only what both releases have (`Audio(sample_rate=...)`, its
`__call__`, `crop`, `get_duration` and `validate_file`).
"""

from __future__ import annotations

from io import IOBase

import torch
from pyannote.audio import Audio
from pyannote.audio.core.io import AudioFile
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
