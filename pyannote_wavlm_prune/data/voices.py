"""Synthetic speakers made of espeak-ng voices.

A speaker is one espeak-ng English accent with one voice variant, a pitch and a
speaking rate, e.g. ``en-gb-scotland_f3_p45_s155``. Utterances are sentences of
a built-in list, synthesised with ``espeak-ng --stdout`` and resampled to 16 kHz.

espeak-ng is deterministic: the same voice, parameters and text give the same
samples in every process (checked for 1.51, including the noise-excited voices),
so utterances need no on-disk cache for a build to be reproducible. The
espeak-ng version is part of the source fingerprint, hence of the build
parameters: another version may synthesise other samples.
"""

from __future__ import annotations

import functools
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

SAMPLE_RATE = 16000

# English accents only: every sentence below is English, and another language's
# rules would read it as gibberish (still speech, but a needless oddity).
ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

# Human-sounding variants; novelty ones (whisper, croak, robots, "Demonic") are left out.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
    "adam", "Andy", "Annie", "antonio", "belinda", "benjamin", "david", "edward",
    "Alex", "Alicia", "Andrea", "Gene", "Hugo", "iven", "john", "klatt", "Lee",
    "linda", "max", "Michael", "Mike", "paul", "quincy", "rob", "steph", "travis",
)  # fmt: skip

PITCHES = (25, 35, 45, 55, 65, 75)  # espeak-ng -p, 0..99 (50 is the voice's default)
SPEEDS = (140, 155, 170, 185)  # espeak-ng -s, words per minute

# Varied in length (one word to about five seconds), punctuation (pauses) and
# register, so that turns are of varied length and have pauses inside.
SENTENCES = (
    "Yeah, right.",
    "Okay.",
    "No, not really.",
    "Sure, why not?",
    "Hmm, I am not so sure about that.",
    "Exactly, that is what I meant.",
    "Could you say that again, please?",
    "I think we should leave before the traffic gets really bad tonight.",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
    "Did you see the match last night? It was absolutely incredible.",
    "My sister bought a small house near the river, with a huge garden.",
    "Well, the numbers look fine, but the second chart is a bit confusing.",
    "Honestly, I would rather take the train than drive all the way there.",
    "We ran out of coffee again, so somebody has to go to the shop.",
    "The new version is faster, although it still crashes from time to time.",
    "Let me check my calendar and get back to you tomorrow morning.",
    "That restaurant on the corner closed down last month, sadly.",
    "If it rains on Saturday, we can always go to the museum instead.",
    "I have read the report twice and I still do not understand the conclusion.",
    "The children were playing in the park until it got dark.",
    "Can you send me the slides after the call?",
    "Right, so the plan is to finish the first draft by Friday.",
    "Apparently the bridge will be closed for repairs for three weeks.",
    "I used to play the piano, but I have not practised in years.",
    "Wait, which room are we supposed to be in?",
    "The printer on the second floor is broken again.",
    "She said the results would be ready at the end of the week.",
    "To be fair, nobody expected the project to take this long.",
    "We could split the work: you take the data, and I take the writing.",
    "What time does the last bus leave from the station?",
    "I really enjoyed the book, especially the part about the old lighthouse.",
    "The temperature dropped below zero for the first time this winter.",
    "Thanks a lot, that is very kind of you.",
    "Let us not forget that the budget was cut by twenty percent.",
    "Good point. I had not thought about it that way.",
    "He moved to Canada when he was seven and never came back.",
    "The soup needs a little more salt, and maybe some pepper.",
    "Is anybody else having trouble with the network today?",
    "Fine, but only if we start early, say around eight.",
    "My grandmother still writes letters by hand every single week.",
)


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """Return the installed espeak-ng version, e.g. ``"1.51"``.

    Raises
    ------
    RuntimeError
        When espeak-ng is not installed.
    """
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise RuntimeError(
            "espeak-ng is not installed (apt-get install espeak-ng); it is the default "
            "speaker source. Pass source=<folder of <speaker>/*.wav> to use real recordings."
        )
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    return output.split(":")[1].split()[0]


@functools.lru_cache(maxsize=1)
def installed_variants() -> tuple[str, ...]:
    """Return the espeak-ng voice variants among `VARIANTS` that are installed.

    espeak-ng silently falls back to its default voice for an unknown variant, which
    would merge two "speakers" into one: only installed variants are used.
    """
    output = subprocess.run(
        ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    # the File column reads "!v/<variant file>"
    files = {
        token[3:]
        for line in output.splitlines()
        for token in line.split()
        if token.startswith("!v/")
    }
    return tuple(variant for variant in VARIANTS if variant in files)


def _decode_wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """Return samples (float64 in [-1, 1]) and sample rate of espeak-ng's --stdout WAV.

    espeak-ng writes placeholder chunk sizes (0x7ffff...) when writing to a pipe,
    which the `wave` module rejects: the chunks are walked by hand instead.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not return a WAV stream")
    position, sample_rate = 12, None
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        (chunk_size,) = struct.unpack("<I", data[position + 4 : position + 8])
        if chunk_id == b"fmt ":
            sample_rate = struct.unpack("<I", data[position + 12 : position + 16])[0]
        elif chunk_id == b"data":
            pcm = data[position + 8 :]
            pcm = pcm[: len(pcm) // 2 * 2]
            return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0, sample_rate
        position += 8 + chunk_size
    raise RuntimeError("espeak-ng WAV stream has no data chunk")


class EspeakSource:
    """Speakers synthesised by espeak-ng (voice variant x accent x pitch x speed).

    Parameters
    ----------
    num_workers : int, optional
        Number of espeak-ng processes run at once. Defaults to the number of CPUs.
    """

    def __init__(self, num_workers: int | None = None):
        espeak_version()  # fail early with a clear message when espeak-ng is missing
        self.num_workers = num_workers

    def fingerprint(self) -> dict:
        """Return what identifies the audio this source produces (part of build parameters)."""
        return {"type": "espeak-ng", "version": espeak_version()}

    def draw_speakers(self, count: int, rng: np.random.Generator) -> list[str]:
        """Return `count` distinct speaker names, spreading them over voice variants.

        Variants are dealt round-robin (in a shuffled order) so that two speakers
        share a variant only once every variant is in use: a variant changes the
        timbre far more than a pitch or rate change does.
        """
        variants = list(installed_variants())
        rng.shuffle(variants)
        capacity = len(variants) * len(ACCENTS) * len(PITCHES) * len(SPEEDS)
        if count > capacity:
            raise ValueError(f"espeak-ng can make at most {capacity} speakers, {count} were asked")
        speakers: list[str] = []
        while len(speakers) < count:
            variant = variants[len(speakers) % len(variants)]
            accent = ACCENTS[rng.integers(len(ACCENTS))]
            pitch = PITCHES[rng.integers(len(PITCHES))]
            speed = SPEEDS[rng.integers(len(SPEEDS))]
            name = f"{accent}_{variant}_p{pitch}_s{speed}"
            if name not in speakers:
                speakers.append(name)
        return speakers

    def utterances_of(
        self, counts: dict[str, int], seed: int, progress: bool = False
    ) -> dict[str, list[np.ndarray]]:
        """Return utterances for several speakers at once (espeak-ng runs in parallel).

        Sentences are drawn without replacement (as long as the list allows) from a
        generator seeded by `seed` and the speaker name, so a speaker's utterances
        do not depend on which other speakers are drawn.

        Parameters
        ----------
        counts : dict
            Speaker name -> number of utterances.
        seed : int
            Seed of the choice of sentences.
        progress : bool, optional
            Show a progress bar. Defaults to False.

        Returns
        -------
        utterances : dict
            Speaker name -> list of float64 waveforms at 16 kHz.
        """
        jobs: list[tuple[str, str]] = []
        for speaker, count in counts.items():
            # crc32, not hash(): Python salts str hashes per process
            rng = np.random.default_rng([seed, zlib.crc32(speaker.encode())])
            order = np.concatenate(
                [rng.permutation(len(SENTENCES)) for _ in range(-(-count // len(SENTENCES)))]
            )
            jobs.extend((speaker, SENTENCES[i]) for i in order[:count])
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            # pool.map keeps the order of jobs: the result does not depend on scheduling
            waveforms = list(
                tqdm(
                    pool.map(lambda job: synthesize(*job), jobs),
                    total=len(jobs),
                    desc="espeak-ng",
                    disable=not progress,
                )
            )
        result: dict[str, list[np.ndarray]] = {speaker: [] for speaker in counts}
        for (speaker, _), waveform in zip(jobs, waveforms, strict=True):
            result[speaker].append(waveform)
        return result


def synthesize(speaker: str, text: str) -> np.ndarray:
    """Return `text` spoken by espeak-ng `speaker` as a float64 waveform at 16 kHz.

    Parameters
    ----------
    speaker : str
        Speaker name as made by `EspeakSource.draw_speakers`:
        ``<accent>_<variant>_p<pitch>_s<speed>``.
    text : str
        Text to speak.

    Returns
    -------
    waveform : np.ndarray
        Shape (num_samples,).
    """
    accent, variant, pitch, speed = _parse_speaker(speaker)
    voice = f"{accent}+{variant}"
    command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    completed = subprocess.run(command, capture_output=True, check=True)
    waveform, sample_rate = _decode_wav_stream(completed.stdout)
    if sample_rate != SAMPLE_RATE:
        # polyphase resampling: exact rational ratio, deterministic, no time-dependent state
        divisor = np.gcd(SAMPLE_RATE, sample_rate)
        from scipy.signal import resample_poly  # slow to import: see acoustics.reverberate

        waveform = resample_poly(waveform, SAMPLE_RATE // divisor, sample_rate // divisor)
    return waveform


def _parse_speaker(speaker: str) -> tuple[str, str, int, int]:
    parts = speaker.split("_")
    if len(parts) != 4 or not parts[2].startswith("p") or not parts[3].startswith("s"):
        raise ValueError(
            f"{speaker!r} is not an espeak-ng speaker name, expected "
            "<accent>_<variant>_p<pitch>_s<speed>"
        )
    return parts[0], parts[1], int(parts[2][1:]), int(parts[3][1:])
