"""The cases on which DiariZen's own pipeline was run to make tests/data/diarizen/.

Shared by `scripts/diarizen_fixtures.py` (which ran DiariZen's code) and
`tests/test_diarizen_pipeline.py` (which compares ours with what it produced). The case
lists need nothing but the standard library: DiariZen's environment imports them too; what
builds the inputs (`write_inputs`) needs this project.

Inputs are rebuilt, not stored: hub directories of tiny DiariZen-format models (random
weights from a seed, `diarizen_helpers`, or the stored trained.pt, a model trained by
`scripts/diarizen_fixtures.py train`), the random WeSpeaker ResNet34 (seed 0) and PLDA,
and five audio files: pyannote's sample, DiariZen's example/EN2002a_30s.wav (stored: 30 s
of the AMI meeting EN2002a, AMI corpus, CC BY 4.0), and three made from the stored
`simulated.wav` (whole, its first 6 s, and stereo with pyannote's sample). Their
digests (`inputs.json`) say whether a rebuild gave the inputs DiariZen was given.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "data" / "diarizen"
SAMPLE_RATE = 16000

# tiny models: random weights (degenerate segmentations: one class almost everywhere), and
# seed 0 with BIAS added to its classifier's bias, so that its decisions change from frame to
# frame between silence, three speakers and their overlaps (on 16 s of the simulated
# conversation: 346 frames of silence, 122 / 92 / 173 of speakers 1 / 2 / 3 alone, 63 of
# overlap, 483 changes of class)
MODELS = {
    "random-0": {"seed": 0},
    "random-1": {"seed": 1},
    "random-2": {"seed": 2},
    "biased": {"seed": 0, "bias": True},
    # the same model with config.toml's apply_median_filtering = false: DiariZen's median
    # filter leaves little of the biased model's flickering decisions (on the simulated
    # conversation 4.3 s of speech, 0.02 s of overlap, no turn after the end); unfiltered,
    # 21 s of speech, 2.7 s of overlap, and turns into the zero-padded end of the last chunk
    "biased-raw": {"seed": 0, "bias": True, "median_filtering": False},
    # DiariZen's architecture (random-0's) fine-tuned on simulated conversations, stored in
    # DiariZen's format (scripts/diarizen_fixtures.py train)
    "trained": {"seed": 0, "state": "trained.pt"},
    # the same model, clustered with a lower AHC threshold and VBx's Fa, Fb at the ends of
    # DiariZen's tuning ranges (0.5: acoustic scale, 0.01: speaker prior): the random
    # embedding keeps several VBx clusters (3 on the simulated conversation), where
    # DiariZen's config keeps one
    "trained-split": {"seed": 0, "state": "trained.pt",
                      "clustering": {"ahc_threshold": 0.1, "Fa": 0.5, "Fb": 0.01}},
}
# one value per powerset class of 4 speakers, at most 2 per frame: silence, speakers 1-4,
# then pairs 1+2, 1+3, 1+4, 2+3, 2+4, 3+4 (chosen from the classes' mean scores)
BIAS = [1.2, 2.8, 1.4, 3.5, 0.0, 2.0, -0.5, -1.5, 1.1, 0.0, 0.0]
AUDIO = ("sample", "EN2002a_30s", "simulated", "short", "stereo")
# (min_speakers, max_speakers) written in config.toml's [clustering.args]: DiariZen's
# defaults, two speakers, and one (max_speakers = 1 caps the instantaneous count at 1: the
# biased model never hears more than 2 at once, so 2 caps nothing)
BOUNDS = {"free": (1, 20), "two": (2, 2), "one": (1, 1)}
# the seconds of the simulated conversation that make the short (shorter than a 16 s chunk)
# and, with pyannote's sample as the second channel, the stereo file
SHORT = (0.0, 6.0)
STEREO = (10.0, 30.0)


def cases() -> list[str]:
    """Every case name, "<model>.<audio>.<bounds>"."""
    return [f"{model}.{audio}.{bounds}" for model in MODELS for audio in AUDIO for bounds in BOUNDS]


def hub_name(model: str, bounds: str) -> str:
    return f"{model}-{bounds}"


# ----------------------------------------------------------------------------- inputs


def write_inputs(work: Path, simulated: Path | None = None) -> dict[str, str]:
    """Hub directories, embedding and audio files of every case under `work`; their digests

    `simulated`: the WAV of the simulated conversation (defaults to the stored one).
    """
    import numpy as np
    import torch
    from diarizen_helpers import TINY_BACKEND, TINY_PRUNED, diarizen_state_dict, write_hub
    from helpers import random_wespeaker

    from pyannote_wavlm_prune.models.checkpoint import save_checkpoint

    digests: dict[str, str] = {}
    embedding = work / "embedding" / "pytorch_model.bin"
    save_checkpoint(random_wespeaker(), embedding)
    digests["embedding"] = state_digest(torch.load(embedding, map_location="cpu",
                                                   weights_only=False)["state_dict"])
    for model, description in MODELS.items():
        if "state" in description:
            state = torch.load(FIXTURES / description["state"], map_location="cpu")
        else:
            state = diarizen_state_dict(TINY_PRUNED, description["seed"], TINY_BACKEND)
        if description.get("bias"):
            state["classifier.bias"] += torch.tensor(BIAS)
        digests[model] = state_digest(state)
        for bounds, (low, high) in BOUNDS.items():
            hub = work / "hubs" / hub_name(model, bounds)
            write_hub(hub, TINY_PRUNED, seed=description["seed"], backend=TINY_BACKEND,
                      state=state)
            set_clustering_args(hub / "config.toml", min_speakers=low, max_speakers=high,
                                **description.get("clustering", {}))
            if description.get("median_filtering") is False:
                toml = hub / "config.toml"
                toml.write_text(toml.read_text().replace("apply_median_filtering = true",
                                                         "apply_median_filtering = false"))
    digests["plda"] = file_digest(*(work / "hubs" / hub_name("random-0", "free") / "plda").glob(
        "*.npz"))

    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    sample = read_wav(sample_wav())
    conversation = read_wav(simulated or FIXTURES / "simulated.wav")
    rate = SAMPLE_RATE
    short = conversation[int(SHORT[0] * rate):int(SHORT[1] * rate)]
    start, end = (int(t * rate) for t in STEREO)
    stereo = np.stack([conversation[start:end, 0], sample[:end - start, 0]], axis=1)
    meeting = read_wav(FIXTURES / "EN2002a_30s.wav")
    for name, waveform in (("sample", sample), ("EN2002a_30s", meeting),
                           ("simulated", conversation), ("short", short), ("stereo", stereo)):
        write_wav(audio / f"{name}.wav", waveform)
        digests[f"audio/{name}"] = hashlib.sha256(waveform.tobytes()).hexdigest()
    return digests


def read_wav(path: Path):
    """(samples, channels) int16 array of a 16 kHz 16-bit PCM WAV file."""
    import wave

    import numpy as np

    with wave.open(str(path), "rb") as file:
        if file.getframerate() != SAMPLE_RATE or file.getsampwidth() != 2:
            raise ValueError(f"{path}: {file.getframerate()} Hz, {8 * file.getsampwidth()} bit: "
                             f"expected {SAMPLE_RATE} Hz 16-bit PCM.")
        data = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2")
        return data.reshape(-1, file.getnchannels())


def write_wav(path: Path, waveform) -> None:
    """Write a (samples, channels) int16 array as a 16 kHz 16-bit PCM WAV file."""
    import wave

    import numpy as np

    waveform = np.asarray(waveform, dtype="<i2")
    waveform = waveform.reshape(len(waveform), -1)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(waveform.shape[1])
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(waveform.tobytes())


def set_clustering_args(config_toml: Path, **values) -> None:
    """Rewrite these keys of a DiariZen config.toml's [clustering.args]."""
    lines = []
    for line in config_toml.read_text().splitlines():
        key = line.split("=")[0].strip()
        if key in values:
            line = f"{key} = {values[key]}"
        lines.append(line)
    config_toml.write_text("\n".join(lines) + "\n")


def sample_wav() -> Path:
    """pyannote.audio's sample file (30 s, two speakers)."""
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def state_digest(state) -> str:
    """sha256 of a state dict's names, shapes and float64 values (device and dtype aside)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().double().cpu().numpy().tobytes())
    return digest.hexdigest()


def file_digest(*paths: Path) -> str:
    """sha256 of the arrays of .npz files (their order of names, not their zip metadata)

    Rounded to float32 first: the PLDA's orthonormal matrices come from LAPACK's QR, whose
    last bits differ between CPUs (the BLAS kernels they select); rounding to float32 maps
    values a few float64 ulps apart to the same number, but for values on a float32
    rounding boundary (about 1 in 10^9 per value).
    """
    import numpy as np

    digest = hashlib.sha256()
    for path in sorted(paths):
        with np.load(path) as arrays:
            for name in sorted(arrays.files):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
    return digest.hexdigest()


def stored_digests() -> dict[str, str]:
    return json.loads((FIXTURES / "inputs.json").read_text())


# ----------------------------------------------------------------------------- RTTM


def read_rttm(text: str) -> list[tuple[float, float, str]]:
    """(start, duration, label) of each SPEAKER line, in the order written."""
    turns = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            turns.append((float(fields[3]), float(fields[4]), fields[7]))
    return turns


def canonical(turns: list[tuple[float, float, str]]) -> list[tuple[float, float, int]]:
    """Turns sorted, labels replaced by their rank among the sorted labels

    DiariZen writes its cluster indices (0, 1, ...), pyannote SPEAKER_00, ... in the order of
    those indices: ranks make the two comparable.
    """
    def key(label: str):
        return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)

    ranks = {label: rank for rank, label in enumerate(sorted({t[2] for t in turns}, key=key))}
    return sorted((round(start, 3), round(duration, 3), ranks[label])
                  for start, duration, label in turns)


# RTTM writes starts and durations to the millisecond, each rounded: a turn cut at the
# file's end from a rounded start can end 1 ms away from ours; frames are 20 ms apart
TOLERANCE = 0.0015


def same_turns(ours: list[tuple[float, float, str]], theirs: list[tuple[float, float, str]],
               tolerance: float = TOLERANCE) -> bool:
    """Whether two RTTMs hold the same turns (labels by rank, see `canonical`): as many,
    each with the same speaker, its start and end within `tolerance` seconds."""
    def turns(rttm):
        return sorted((label, start, start + duration)
                      for start, duration, label in canonical(rttm))

    a, b = turns(ours), turns(theirs)
    return len(a) == len(b) and all(
        x[0] == y[0] and abs(x[1] - y[1]) <= tolerance and abs(x[2] - y[2]) <= tolerance
        for x, y in zip(a, b))
