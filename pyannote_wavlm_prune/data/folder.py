"""Speakers read from a folder of single-speaker recordings: ``<folder>/<speaker>/*.wav``.

Each file is one utterance of the speaker named by its sub-folder (``.wav`` or
``.flac``, any sample rate and channel count: files are down-mixed to mono and
resampled to 16 kHz). Files longer than `max_duration` are cropped to a random
window so that one long recording does not make a monologue of a conversation.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

SAMPLE_RATE = 16000
AUDIO_SUFFIXES = (".wav", ".flac")


class FolderSource:
    """Speakers of a ``<folder>/<speaker>/*.{wav,flac}`` tree.

    Parameters
    ----------
    folder : str or Path
        Root of the tree; each sub-folder holding audio files is one speaker.
    max_duration : float, optional
        Longest utterance, in seconds; longer files are cropped. Defaults to 8.0.

    Raises
    ------
    ValueError
        When `folder` does not exist or holds no ``<speaker>/*.wav|flac`` file.
    """

    def __init__(self, folder: str | Path, max_duration: float = 8.0):
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise ValueError(f"source folder {str(folder)!r} does not exist or is not a folder")
        self.max_duration = max_duration
        self._files: dict[str, list[Path]] = {}
        for speaker_dir in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            files = sorted(
                p
                for p in speaker_dir.iterdir()
                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
            if files:
                self._files[speaker_dir.name] = files
        if not self._files:
            raise ValueError(
                f"source folder {str(folder)!r} is empty: expected <speaker>/*.wav or "
                "<speaker>/*.flac files in it"
            )
        for speaker in self._files:
            if any(character.isspace() for character in speaker):
                # RTTM fields are separated by white space
                raise ValueError(f"speaker folder name {speaker!r} contains white space")

    def speakers(self) -> list[str]:
        """Return all speaker names, sorted."""
        return list(self._files)

    def fingerprint(self) -> dict:
        """Return what identifies the audio this source produces (part of build parameters).

        File names and sizes stand for the content: hashing every file would cost a
        full read of a possibly large corpus at every build.
        """
        listing = hashlib.sha256()
        for speaker, files in self._files.items():
            for path in files:
                listing.update(f"{speaker}/{path.name}:{path.stat().st_size}\n".encode())
        return {"type": "folder", "files": listing.hexdigest()}

    def draw_speakers(self, count: int, rng: np.random.Generator) -> list[str]:
        """Return `count` distinct speaker names drawn at random."""
        available = self.speakers()
        if count > len(available):
            raise ValueError(
                f"source folder {str(self.folder)!r} has {len(available)} speakers, {count} are "
                "needed (train + development + test pools): lower speakers_per_subset"
            )
        return [available[i] for i in rng.permutation(len(available))[:count]]

    def utterances_of(
        self, counts: dict[str, int], seed: int, progress: bool = False
    ) -> dict[str, list[np.ndarray]]:
        """Return up to `counts[speaker]` utterances (float64 waveforms at 16 kHz) per speaker.

        A speaker with fewer files than asked gets all of them.

        Parameters
        ----------
        counts : dict
            Speaker name -> number of utterances.
        seed : int
            Seed of the choice of files and of crops.
        progress : bool, optional
            Show a progress bar. Defaults to False.

        Returns
        -------
        utterances : dict
            Speaker name -> list of float64 waveforms at 16 kHz.
        """
        result = {}
        for speaker, count in tqdm(counts.items(), desc="reading", disable=not progress):
            files = self._files[speaker]
            # crc32, not hash(): Python salts str hashes per process
            rng = np.random.default_rng([seed, zlib.crc32(speaker.encode())])
            chosen = rng.permutation(len(files))[:count]
            result[speaker] = [self._load(files[i], rng) for i in sorted(chosen)]
        return result

    def _load(self, path: Path, rng: np.random.Generator) -> np.ndarray:
        from torchcodec.decoders import AudioDecoder

        samples = AudioDecoder(path, sample_rate=SAMPLE_RATE, num_channels=1).get_all_samples()
        waveform = samples.data[0].double().numpy()
        max_samples = int(self.max_duration * SAMPLE_RATE)
        if len(waveform) > max_samples:
            offset = int(rng.integers(len(waveform) - max_samples + 1))
            waveform = waveform[offset : offset + max_samples]
        return waveform
