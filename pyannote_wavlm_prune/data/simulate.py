"""Simulated-conversation corpora, written as pyannote.database protocols.

>>> from pyannote_wavlm_prune.data import simulate, get_protocol
>>> database_yml = simulate("data/simulated/tiny", preset="tiny")
>>> protocol = get_protocol(database_yml)  # Simulated.SpeakerDiarization.tiny
>>> file = next(protocol.train())  # file["audio"], file["annotation"], file["annotated"]

A corpus root holds::

    audio/<uri>.wav           16 kHz mono 16-bit mixtures
    rttm/<subset>.rttm        reference, one file per subset (train, development, test)
    uem/<subset>.uem          annotated part: the whole of each file
    lists/<subset>.txt        uris
    database.yml              <database>.SpeakerDiarization.<name>, paths relative to it
    simulation.json           build parameters, build status and realised statistics

Reproducibility: every random number comes from numpy generators seeded by
`SimulationConfig.seed` (speaker pools), by the seed and a speaker name
(utterances) or by the seed, the subset and the conversation index (everything
else), so the same parameters give byte-identical files, and each conversation
can be regenerated alone (`Simulator.conversation`, `Simulator.render`).

Resuming and rebuilding: `simulation.json` is written first (status "building")
and rewritten last (status "complete"); every file is written to a temporary
name then renamed. Building again into the same root with the same parameters
does nothing when the corpus is complete and finishes it otherwise (files that
exist are kept). With other parameters it raises `FileExistsError` rather than
overwriting: choose another root, or delete this one.

Loading (`get_protocol`): pyannote.database resolves "Databases" (audio) paths
against the yml's folder, but list, RTTM and UEM paths against the working
directory first and the yml's folder only when not found there; do not run from
a folder that has its own lists/, rttm/ or uem/ files. Its registry also keeps a
single audio location per database name, so each corpus is loaded into a
registry of its own by default.
"""

from __future__ import annotations

import json
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..files import write_atomically
from .config import OVERLAP_TOLERANCE, SUBSETS, SimulationConfig
from .conversation import (
    SAMPLE_RATE,
    Conversation,
    Rendering,
    Utterance,
    plan_conversation,
    render_conversation,
)
from .folder import FolderSource
from .protocols import get_protocol
from .voices import EspeakSource

MARKER = "simulation.json"
# what a corpus holds beside its marker
CORPUS_ENTRIES = ("audio", "rttm", "uem", "lists", "database.yml")
FORMAT_VERSION = 1  # bump when a code change alters the audio that given parameters produce


class SpeakerSource(Protocol):
    """What the simulator needs from a source of single-speaker utterances."""

    def fingerprint(self) -> dict:
        """Return what identifies the audio the source produces (JSON-compatible)."""

    def draw_speakers(self, count: int, rng: np.random.Generator) -> list[str]:
        """Return `count` distinct speaker names (no white space) drawn with `rng`."""

    def utterances_of(
        self, counts: dict[str, int], seed: int, progress: bool = False
    ) -> dict[str, list[np.ndarray]]:
        """Return speaker name -> up to `counts[speaker]` float64 waveforms at 16 kHz."""


def make_source(config: SimulationConfig) -> SpeakerSource:
    """Return the speaker source of `config`: espeak-ng voices, or its `source` folder."""
    if config.source is None:
        return EspeakSource()
    return FolderSource(config.source, max_duration=config.max_utterance)


def speaker_pools(config: SimulationConfig, source: SpeakerSource | None = None) -> dict[str, list[str]]:
    """Return the disjoint speaker pools of `config`, subset -> speaker names (nothing synthesised)."""
    source = source or make_source(config)
    drawn = source.draw_speakers(sum(config.speakers_per_subset), np.random.default_rng([config.seed, 0]))
    bounds = np.cumsum([0, *config.speakers_per_subset])
    return {subset: drawn[bounds[i] : bounds[i + 1]] for i, subset in enumerate(SUBSETS)}


class Simulator:
    """Conversations of a corpus, one at a time, from its parameters alone.

    Speaker pools and their utterances are made on construction (espeak-ng runs
    here); conversations are planned and rendered on demand.

    Parameters
    ----------
    config : SimulationConfig
    progress : bool, optional
        Show a progress bar while utterances are made. Defaults to False.

    Raises
    ------
    ValueError
        When the source has too few speakers or a speaker has no audible utterance.
    """

    def __init__(self, config: SimulationConfig, progress: bool = False):
        self.config = config
        self.source = make_source(config)
        self.pools = speaker_pools(config, self.source)
        drawn = [speaker for subset in SUBSETS for speaker in self.pools[subset]]
        waveforms = self.source.utterances_of(
            dict.fromkeys(drawn, config.utterances_per_speaker), config.seed, progress=progress
        )
        self.banks: dict[str, list[Utterance]] = {}
        for speaker, speaker_waveforms in waveforms.items():
            utterances = [
                Utterance.from_waveform(w, config.activity_threshold) for w in speaker_waveforms
            ]
            self.banks[speaker] = [u for u in utterances if u is not None]
            if not self.banks[speaker]:
                raise ValueError(f"speaker {speaker!r} has no audible utterance")

    def fingerprint(self) -> dict[str, Any]:
        """Return the build parameters: the config, the source's identity and the format."""
        return {
            "config": self.config.to_dict(),
            "source": self.source.fingerprint(),
            "format": FORMAT_VERSION,
        }

    def _rngs(self, subset: str, index: int) -> list[np.random.Generator]:
        # one stream per concern: skipping a rendering (file already written) or
        # changing the noise leaves the plan of this and every other conversation as is
        sequence = np.random.SeedSequence([self.config.seed, 1 + SUBSETS.index(subset), index])
        return [np.random.default_rng(child) for child in sequence.spawn(3)]

    def conversation(self, subset: str, index: int) -> Conversation:
        """Return the plan of conversation `index` of `subset`."""
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}, expected one of {SUBSETS}")
        config = self.config
        plan_rng, _, _ = self._rngs(subset, index)
        pool = self.pools[subset]
        num_speakers = int(plan_rng.integers(config.num_speakers[0], config.num_speakers[1] + 1))
        speakers = [
            pool[i] for i in sorted(plan_rng.choice(len(pool), num_speakers, replace=False))
        ]
        return plan_conversation(
            config.uri(subset, index),
            plan_rng,
            {speaker: self.banks[speaker] for speaker in speakers},
            target_duration=plan_rng.uniform(*config.duration),
            overlap=config.overlap,
            pause=config.pause,
        )

    def render(
        self, subset: str, index: int, conversation: Conversation | None = None
    ) -> Rendering:
        """Return the audio of conversation `index` of `subset`, with per-speaker dry tracks."""
        if conversation is None:
            conversation = self.conversation(subset, index)
        _, room_rng, noise_rng = self._rngs(subset, index)
        return render_conversation(
            conversation,
            self.banks,
            room_rng,
            noise_rng,
            noise_snr=self.config.noise_snr,
            rt60=self.config.rt60 if self.config.reverb else None,
        )

    def conversations(self, subset: str) -> Iterator[Conversation]:
        """Yield the plans of all conversations of `subset`."""
        for index in range(self.config.conversations[SUBSETS.index(subset)]):
            yield self.conversation(subset, index)


def simulate(
    root: str | Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    overlap: float | None = None,
    num_speakers: int | tuple[int, int] | None = None,
    noise_snr: float | tuple[float, float] | None = None,
    reverb: bool = False,
    source: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Build (or finish, or find) a simulated corpus in `root`; return its database.yml.

    Parameters
    ----------
    root : str or Path
        Corpus folder, created if needed.
    preset : {"tiny", "quickstart", "voices"}, optional
        Starting parameters. Defaults to "tiny".
    seed : int, optional
        Defaults to 0.
    overlap : float, optional
        Overlap ratio in [0, 1). Defaults to the preset's (0.2).
    num_speakers : int or (int, int), optional
        Speakers per conversation. Defaults to the preset's.
    noise_snr : float or (float, float), optional
        SNR of additive noise in dB. Defaults to no noise.
    reverb : bool, optional
        Add synthetic reverberation. Defaults to False.
    source : str or Path, optional
        Folder of ``<speaker>/*.wav|flac``. Defaults to espeak-ng voices.
    progress : bool, optional
        Show progress bars. Defaults to True.
    **overrides
        Any other `SimulationConfig` parameter (e.g. ``conversations=(2, 1, 1)``, ``name="mine"``).

    Returns
    -------
    database_yml : Path
        The corpus' database.yml, defining ``<database>.SpeakerDiarization.<name>``.

    Raises
    ------
    ValueError
        On a bad parameter (naming it), an unknown preset or an empty source folder.
    FileExistsError
        When `root` holds a corpus built with other parameters, or other files.
    """
    given = dict(seed=seed, reverb=reverb, **overrides)
    for key, value in (("overlap", overlap), ("num_speakers", num_speakers),
                       ("noise_snr", noise_snr), ("source", source)):  # fmt: skip
        if value is not None:
            given[key] = str(value) if key == "source" else value
    config = SimulationConfig.from_preset(preset, **given)
    return build_corpus(root, config, progress=progress)


def build_corpus(root: str | Path, config: SimulationConfig, progress: bool = True) -> Path:
    """Build the corpus of `config` in `root`; return its database.yml (see `simulate`)."""
    root = Path(root)
    database_yml = root / "database.yml"
    marker = _read_marker(root)
    if marker is None and root.exists():
        clashes = [
            name
            for name in CORPUS_ENTRIES
            if (root / name).exists()
        ]
        if clashes:
            raise FileExistsError(
                f"{str(root)!r} already holds {clashes} but no {MARKER}: not a corpus of this "
                "simulator; use another root"
            )

    # a complete corpus is recognised without running espeak-ng: the config and the
    # format are compared first, the source fingerprint (cheap) next
    if marker is not None:
        from_marker = marker.get("parameters", {})
        if (
            from_marker.get("config") != config.to_dict()
            or from_marker.get("format") != FORMAT_VERSION
        ):
            raise FileExistsError(_difference_message(root, from_marker, config))
        source = make_source(config)
        if from_marker.get("source") != source.fingerprint():
            raise FileExistsError(
                f"{str(root)!r} was built from another speaker source "
                f"({from_marker.get('source')} != {source.fingerprint()}); use another root"
            )
        if marker.get("status") == "complete" and _is_intact(root, config):
            return database_yml

    simulator = Simulator(config, progress=progress)
    parameters = simulator.fingerprint()
    root.mkdir(parents=True, exist_ok=True)
    # the marker goes first: whatever else is in root is then known to be ours
    _write_text(root / MARKER, _marker_text(parameters, "building"))
    for folder in ("audio", "rttm", "uem", "lists"):
        (root / folder).mkdir(exist_ok=True)

    statistics = {}
    bar = tqdm(
        total=sum(config.conversations), desc=f"simulating {config.name}", disable=not progress
    )
    for subset in SUBSETS:
        rttm, uem, uris, overlaps, hours = [], [], [], [], 0.0
        for index, conversation in enumerate(simulator.conversations(subset)):
            path = root / "audio" / f"{conversation.uri}.wav"
            if not path.exists():
                _write_wav(path, simulator.render(subset, index, conversation).waveform)
            rttm.append(conversation.rttm())
            uem.append(f"{conversation.uri} 1 0.000 {conversation.duration:.3f}\n")
            uris.append(f"{conversation.uri}\n")
            overlaps.append(conversation.overlap_ratio)
            hours += conversation.duration / 3600
            bar.update()
        _write_text(root / "rttm" / f"{subset}.rttm", "".join(rttm))
        _write_text(root / "uem" / f"{subset}.uem", "".join(uem))
        _write_text(root / "lists" / f"{subset}.txt", "".join(uris))
        statistics[subset] = {
            "conversations": len(uris),
            "speakers": len(simulator.pools[subset]),
            "minutes": round(hours * 60, 3),
            "overlap": {
                "mean": round(float(np.mean(overlaps)), 4),
                "min": round(float(np.min(overlaps)), 4),
                "max": round(float(np.max(overlaps)), 4),
            },
        }
        off = [o for o in overlaps if abs(o - config.overlap) > OVERLAP_TOLERANCE]
        if off:
            warnings.warn(
                f"{len(off)} {subset} conversation(s) of {config.name} miss the requested overlap "
                f"{config.overlap} by more than {OVERLAP_TOLERANCE} (realised: {sorted(off)}): "
                "too short or too few speakers for it",
                stacklevel=2,
            )
    bar.close()
    _write_text(database_yml, database_yml_text(config))
    _write_text(root / MARKER, _marker_text(parameters, "complete", statistics))
    return database_yml


def database_yml_text(config: SimulationConfig) -> str:
    """Return the database.yml of a corpus root, defining the protocol of `config`."""
    return (
        "# Written by pyannote_wavlm_prune.data.simulate: paths are relative to this file.\n"
        + yaml.safe_dump(
            {
                "Databases": {config.database: "audio/{uri}.wav"},
                "Protocols": {
                    config.database: {"SpeakerDiarization": {config.name: _protocol_entries()}}
                },
            },
            sort_keys=False,
        )
    )


def _protocol_entries() -> dict[str, Any]:
    # speaker names are consistent across the files of a corpus: "database" scope
    entries: dict[str, Any] = {"scope": "database"}
    for subset in SUBSETS:
        entries[subset] = {
            "uri": f"lists/{subset}.txt",
            "annotation": f"rttm/{subset}.rttm",
            "annotated": f"uem/{subset}.uem",
        }
    return entries


def build_tiny_corpus(root: str | Path):
    """Build the "tiny" corpus in `root` (quietly) and return its protocol (for test fixtures)."""
    return get_protocol(
        simulate(root, preset="tiny", progress=False), "Simulated.SpeakerDiarization.tiny"
    )


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except FileNotFoundError:
        return None


def _marker_text(parameters: dict, status: str, statistics: dict | None = None) -> str:
    # nothing time- or machine-dependent: same parameters, byte-identical marker
    content = {"status": status, "parameters": parameters}
    if statistics is not None:
        content["statistics"] = statistics
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def _difference_message(root: Path, existing: dict, config: SimulationConfig) -> str:
    old, new = existing.get("config", {}), config.to_dict()
    differences = [
        f"{key}: {old.get(key)!r} there, {new.get(key)!r} asked"
        for key in new
        if old.get(key) != new.get(key)
    ]
    if existing.get("format") != FORMAT_VERSION:
        differences.append(f"format: {existing.get('format')!r} there, {FORMAT_VERSION} here")
    return (
        f"{str(root)!r} holds a corpus built with other parameters ({'; '.join(differences)}): "
        "use another root, or delete this one to rebuild it"
    )


def _is_intact(root: Path, config: SimulationConfig) -> bool:
    if not (root / "database.yml").is_file():
        return False
    for subset, count in zip(SUBSETS, config.conversations, strict=True):
        for name in (f"rttm/{subset}.rttm", f"uem/{subset}.uem", f"lists/{subset}.txt"):
            if not (root / name).is_file():
                return False
        if not all(
            (root / "audio" / f"{config.uri(subset, i)}.wav").is_file() for i in range(count)
        ):
            return False
    return True


def _write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def _write_wav(path: Path, waveform: np.ndarray) -> None:
    """Write int16 `waveform` (shape (num_samples,)) as a 16 kHz mono 16-bit WAV."""

    def write(f) -> None:
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(waveform.astype("<i2").tobytes())

    write_atomically(path, write)
