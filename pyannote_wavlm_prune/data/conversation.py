"""One simulated conversation: where each utterance goes, what the reference says, how it sounds.

Time is counted in 10 ms frames throughout. Utterances are trimmed to whole
frames and placed on frame boundaries, so the reference (RTTM) derived from the
frame-level speech activity of each utterance is exact at 10 ms resolution, and
the overlap ratio that the planner aims at is the one a scorer measures on it.

Turn-taking (`plan_conversation`)
---------------------------------
Speakers alternate (never the same speaker twice in a row; everyone speaks at
least once). Each new turn either follows the conversation after a random pause
or starts before the current speech ends: an overlapping turn start, or a
backchannel lying entirely inside another turn (a speaker never overlaps
themself). The overlap of an overlapping start is not drawn blindly: among all
feasible start frames, the planner picks the latest one that brings the running

    overlap ratio = (time where 2+ speakers talk) / (time where 1+ speakers talk)

closest to a per-turn aim, the requested ratio times a random overshoot that
leaves room for later pauses. Over the last part of the conversation the aim is
the request itself and a pause is taken only when it keeps the ratio at or above
the request, and the next speaker is the one silent the longest when the ratio
is short; a conversation still more than 0.01 off at its target length gets more
turns (up to 25% or 8 s longer). Measured on the espeak-ng voices over 3600
conversations of 12 or 30 s with 2 to 4 speakers, all land within 0.05 of any
request from 0 to 0.5 (nearly all within 0.01); at 0.6, 4% of 12 s two-speaker
conversations fall short, and above that two speakers cannot keep talking over
each other long enough (the corpus builder warns about conversations off by
more than 0.05).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .acoustics import colored_noise, impulse_response, reverberate

SAMPLE_RATE = 16000
FRAME = 160  # samples per frame: 10 ms at 16 kHz
FRAME_DURATION = FRAME / SAMPLE_RATE

# Gaps shorter than this inside an utterance (stop closures) are not pauses;
# islands of activity this short are clicks, not speech.
MAX_FILLED_GAP = 2  # frames
MIN_ISLAND = 2  # frames
SILENCE_FLOOR = 1e-4  # frame RMS below this (-80 dBFS) is silence whatever the peak

# Planner. Until FINAL_PHASE of the target length, overlapping starts aim at up to
# MAX_OVERSHOOT times more than the requested ratio, and a turn that could overlap
# starts after a pause anyway with up to PAUSE_PROBABILITY (turn-taking is not all
# interruptions). Starts whose ratios are within RATIO_TIE of the best are ties. A
# conversation ending more than RATIO_SLACK off its ratio goes on for more turns, up
# to MAX_EXTENSION times its target length or MIN_EXTENSION seconds more, whichever
# is longer (the lone tail of a last long turn weighs a lot in a short conversation).
MAX_OVERSHOOT = 0.5
FINAL_PHASE = 0.6
PAUSE_PROBABILITY = 0.3
RATIO_TIE = 0.002
RATIO_SLACK = 0.01
MAX_EXTENSION = 1.25
MIN_EXTENSION = 8.0  # seconds

SPEECH_LEVEL = 10.0 ** (-26.0 / 20.0)  # RMS of the speech mixture over speech frames
PEAK_LIMIT = 0.99


def speech_activity(waveform: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Return the frame-level speech activity of a single-speaker waveform.

    A 10 ms frame is active when its RMS is within `threshold_db` of the loudest
    frame's (and above -80 dBFS); gaps of at most 20 ms are filled and islands of
    at most 20 ms are removed.

    Parameters
    ----------
    waveform : np.ndarray
        Shape (num_samples,); a trailing partial frame is ignored.
    threshold_db : float, optional
        Activity threshold relative to the loudest frame, in dB. Defaults to -40.

    Returns
    -------
    activity : np.ndarray
        Boolean, shape (num_samples // 160,).
    """
    num_frames = len(waveform) // FRAME
    frames = waveform[: num_frames * FRAME].reshape(num_frames, FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    if num_frames == 0 or rms.max() < SILENCE_FLOOR:
        return np.zeros(num_frames, dtype=bool)
    activity = (rms >= rms.max() * 10.0 ** (threshold_db / 20.0)) & (rms >= SILENCE_FLOOR)
    activity = _fill_runs(activity, value=False, max_length=MAX_FILLED_GAP, interior_only=True)
    return _fill_runs(activity, value=True, max_length=MIN_ISLAND, interior_only=False)


def _fill_runs(
    activity: np.ndarray, value: bool, max_length: int, interior_only: bool
) -> np.ndarray:
    """Flip runs of `value` no longer than `max_length` (only interior ones if asked)."""
    activity = activity.copy()
    for start, end in runs(activity == value):
        touches_edge = start == 0 or end == len(activity)
        if end - start <= max_length and not (interior_only and touches_edge):
            activity[start:end] = not value
    return activity


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return the (start, end) frame pairs, end excluded, of the True runs of `mask`."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass(frozen=True)
class Utterance:
    """A single-speaker utterance trimmed to its speech, on the 10 ms frame grid.

    Attributes
    ----------
    waveform : np.ndarray
        Shape (num_frames * 160,), float64.
    activity : np.ndarray
        Boolean, shape (num_frames,); first and last frames are active.
    """

    waveform: np.ndarray
    activity: np.ndarray

    @classmethod
    def from_waveform(cls, waveform: np.ndarray, threshold_db: float = -40.0) -> Utterance | None:
        """Return the utterance trimmed to its first and last active frames, None if silent."""
        activity = speech_activity(waveform, threshold_db)
        active = np.flatnonzero(activity)
        if len(active) == 0:
            return None
        first, last = active[0], active[-1] + 1
        return cls(waveform[first * FRAME : last * FRAME].copy(), activity[first:last].copy())


@dataclass(frozen=True)
class Turn:
    """One utterance placed in a conversation.

    Attributes
    ----------
    speaker : str
    utterance : int
        Index of the utterance in the speaker's bank.
    start : int
        First frame.
    """

    speaker: str
    utterance: int
    start: int


@dataclass
class Conversation:
    """Plan of one conversation: its turns, length and speech activity.

    Attributes
    ----------
    uri : str
    turns : list of Turn
    num_frames : int
        Length, in 10 ms frames (the audio has ``num_frames * 160`` samples).
    activity : dict
        Speaker name -> boolean activity of shape (num_frames,).
    """

    uri: str
    turns: list[Turn]
    num_frames: int
    activity: dict[str, np.ndarray] = field(repr=False)

    @property
    def speakers(self) -> list[str]:
        """Speakers in order of first appearance."""
        return list(self.activity)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames * FRAME_DURATION

    @property
    def overlap_ratio(self) -> float:
        """Time where 2+ speakers talk over time where 1+ speakers talk."""
        count = np.sum(list(self.activity.values()), axis=0)
        return float(np.sum(count >= 2) / max(1, np.sum(count >= 1)))

    def segments(self) -> list[tuple[float, float, str]]:
        """Return the reference as (start, end, speaker) in seconds, sorted by start."""
        segments = [
            (start * FRAME_DURATION, end * FRAME_DURATION, speaker)
            for speaker, activity in self.activity.items()
            for start, end in runs(activity)
        ]
        return sorted(segments, key=lambda segment: (segment[0], segment[2]))

    def rttm(self) -> str:
        """Return the reference as RTTM lines."""
        return "".join(
            f"SPEAKER {self.uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>\n"
            for start, end, speaker in self.segments()
        )


def plan_conversation(
    uri: str,
    rng: np.random.Generator,
    banks: dict[str, list[Utterance]],
    target_duration: float,
    overlap: float,
    pause: tuple[float, float],
) -> Conversation:
    """Place utterances of `banks`' speakers in turns until `target_duration` is reached.

    Parameters
    ----------
    uri : str
        Name of the conversation.
    rng : np.random.Generator
        The only source of randomness.
    banks : dict
        Speaker name -> utterances; every speaker of `banks` speaks at least once.
    target_duration : float
        Speech stops after the first turn that ends past it (or up to 25% or 8 s
        later, to reach `overlap`), in seconds; a leading and a trailing silence
        (each one random pause) are added.
    overlap : float
        Requested overlap ratio, in [0, 1).
    pause : (float, float)
        Range of pauses between turns, in seconds; also the shortest gap between
        two utterances of the same speaker.

    Returns
    -------
    conversation : Conversation
    """
    speakers = list(banks)
    min_pause, max_pause = (round(p / FRAME_DURATION) for p in pause)
    min_pause = max(1, min_pause)
    target = round(target_duration / FRAME_DURATION)
    decks: dict[str, list[int]] = {speaker: [] for speaker in speakers}
    timeline = _Timeline(2 * target)
    free_at = dict.fromkeys(speakers, 0)  # a speaker's next utterance starts after this frame
    frontier = int(rng.integers(min_pause, max_pause + 1))  # end of speech; leading silence first
    previous_speaker = None
    turns: list[Turn] = []
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    # a pause where an overlap is possible: common at low ratios, never at high ones
    pause_probability = PAUSE_PROBABILITY * max(0.0, 1.0 - 2.0 * overlap)

    def unfinished() -> bool:
        if len(turns) < len(speakers) or frontier < target:
            return True
        off_target = abs(timeline.ratio() - overlap) > RATIO_SLACK
        longest = max(MAX_EXTENSION * target, target + round(MIN_EXTENSION / FRAME_DURATION))
        return off_target and frontier < longest

    while unfinished():
        if len(turns) < len(speakers):
            speaker = order[len(turns)]
        else:
            others = [s for s in speakers if s != previous_speaker]
            speaker = others[int(rng.integers(len(others)))]
            if frontier >= FINAL_PHASE * target and timeline.ratio() < overlap:
                # short of overlap late on: the speaker silent the longest can overlap the most
                speaker = min(others, key=lambda s: free_at[s])
        if not decks[speaker]:
            # go through the whole bank before repeating an utterance
            decks[speaker] = rng.permutation(len(banks[speaker])).tolist()
        index = decks[speaker].pop()
        activity = banks[speaker][index].activity

        earliest = free_at[speaker] + min_pause
        start = max(frontier + int(rng.integers(min_pause, max_pause + 1)), earliest)
        final = frontier >= FINAL_PHASE * target
        aim = overlap * (1.0 + (0.0 if final else rng.uniform(0.0, MAX_OVERSHOOT)))
        pause_anyway = not final and rng.uniform() < pause_probability
        # starts from `earliest` to the frontier overlap; a start after the frontier
        # is a pause and leaves the overlapped time as is
        paused_ratio = timeline.ratio(extra_speech=int(activity.sum()))
        if earliest < frontier and paused_ratio < overlap and not pause_anyway:
            ratios = timeline.ratios(activity, earliest, frontier)
            error = np.abs(ratios - aim)
            # among (nearly) equally good starts take the latest: the least overlap
            best = int(np.flatnonzero(error <= error.min() + RATIO_TIE)[-1])
            if error[best] < abs(paused_ratio - aim):
                start = earliest + best

        timeline.add(activity, start)
        turns.append(Turn(speaker, index, start))
        free_at[speaker] = start + len(activity)
        frontier = max(frontier, start + len(activity))
        previous_speaker = speaker

    num_frames = frontier + int(rng.integers(min_pause, max_pause + 1))  # trailing silence
    speaker_activity = {s: np.zeros(num_frames, dtype=bool) for s in order}
    for turn in turns:
        activity = banks[turn.speaker][turn.utterance].activity
        speaker_activity[turn.speaker][turn.start : turn.start + len(activity)] |= activity
    return Conversation(uri, turns, num_frames, speaker_activity)


class _Timeline:
    """Number of speakers talking in each frame, and the overlap ratio it makes."""

    def __init__(self, num_frames: int):
        self.counts = np.zeros(num_frames, dtype=np.int16)
        self.overlapped = 0  # frames where 2+ speakers talk
        self.spoken = 0  # frames where 1+ speakers talk

    def _reserve(self, num_frames: int) -> None:
        if len(self.counts) < num_frames:
            self.counts = np.concatenate([self.counts, np.zeros(num_frames, np.int16)])

    def ratio(self, extra_speech: int = 0) -> float:
        """Overlap ratio, after adding `extra_speech` frames of non-overlapped speech."""
        return self.overlapped / max(1, self.spoken + extra_speech)

    def ratios(self, activity: np.ndarray, first: int, last: int) -> np.ndarray:
        """Overlap ratio after adding `activity` at each start in [first, last).

        Returns
        -------
        ratios : np.ndarray
            Shape (last - first,).
        """
        self._reserve(last - 1 + len(activity))
        window = self.counts[first : last - 1 + len(activity)]
        kernel = activity.astype(np.int32)
        # frames the utterance would turn from 1 speaker to 2, and from 0 to 1
        gained_overlap = np.correlate((window == 1).astype(np.int32), kernel)
        gained_speech = np.correlate((window == 0).astype(np.int32), kernel)
        return (self.overlapped + gained_overlap) / (self.spoken + gained_speech)

    def add(self, activity: np.ndarray, start: int) -> None:
        """Add `activity` (boolean, shape (num_frames,)) from frame `start` on."""
        self._reserve(start + len(activity))
        window = self.counts[start : start + len(activity)]
        self.overlapped += int(np.sum(activity & (window == 1)))
        self.spoken += int(np.sum(activity & (window == 0)))
        window += activity


@dataclass
class Rendering:
    """Audio of a conversation.

    Attributes
    ----------
    waveform : np.ndarray
        Mixture as written to disk: int16, shape (num_samples,).
    tracks : dict
        Speaker name -> dry (unreverberated, noiseless) float64 signal of shape
        (num_samples,), on the mixture's scale (1.0 is int16 full scale).
    """

    waveform: np.ndarray
    tracks: dict[str, np.ndarray] = field(repr=False)


def render_conversation(
    conversation: Conversation,
    banks: dict[str, list[Utterance]],
    room_rng: np.random.Generator,
    noise_rng: np.random.Generator,
    noise_snr: tuple[float, float] | None = None,
    rt60: tuple[float, float] | None = None,
) -> Rendering:
    """Mix the turns of `conversation` into audio, with optional reverberation and noise.

    Each speaker gets a random level (+-3 dB) and, when `rt60` is given, their own
    room response (another position in the room). The mixture is scaled to a
    speech level of -26 dBFS, noise is added at a random SNR from `noise_snr`
    (relative to that speech level), and the whole is scaled down if it would clip.

    Parameters
    ----------
    conversation : Conversation
    banks : dict
        Speaker name -> utterances, those `conversation` was planned with.
    room_rng, noise_rng : np.random.Generator
        Sources of speaker levels and room responses, and of the noise.
    noise_snr : (float, float), optional
        Range of signal-to-noise ratios, in dB. No noise by default.
    rt60 : (float, float), optional
        Range of reverberation times, in seconds. No reverberation by default.

    Returns
    -------
    rendering : Rendering
    """
    num_samples = conversation.num_frames * FRAME
    tracks = {}
    for speaker in conversation.speakers:
        level = 10.0 ** (room_rng.uniform(-3.0, 3.0) / 20.0)
        tracks[speaker] = np.zeros(num_samples)
        for turn in conversation.turns:
            if turn.speaker == speaker:
                waveform = banks[speaker][turn.utterance].waveform
                offset = turn.start * FRAME
                tracks[speaker][offset : offset + len(waveform)] += level * waveform

    wet = tracks
    if rt60 is not None:
        wet = {}
        for speaker, track in tracks.items():
            response = impulse_response(
                room_rng,
                rt60=room_rng.uniform(*rt60),
                direct_to_reverberant=room_rng.uniform(0.0, 10.0),
            )
            wet[speaker] = reverberate(track, response)
    mixture = np.sum(list(wet.values()), axis=0)

    speech = np.repeat(np.any(list(conversation.activity.values()), axis=0), FRAME)
    gain = SPEECH_LEVEL / np.sqrt(np.mean(mixture[speech] ** 2))
    mixture *= gain
    if noise_snr is not None:
        snr = noise_rng.uniform(*noise_snr)
        noise = colored_noise(noise_rng, num_samples, exponent=noise_rng.uniform(0.0, 2.0))
        mixture += noise * SPEECH_LEVEL * 10.0 ** (-snr / 20.0)
    peak = np.max(np.abs(mixture))
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
        mixture *= PEAK_LIMIT / peak
    waveform = np.round(mixture * 32767.0).clip(-32768, 32767).astype("<i2")
    return Rendering(waveform, {speaker: track * gain for speaker, track in tracks.items()})
