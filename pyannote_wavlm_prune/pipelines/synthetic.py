"""Synthetic segmentations and speaker embeddings of a long recording, for the steps after them.

What the clustering, reconstruction and aggregation of `SpeakerDiarization` receive for a
recording of any length, without audio or models: a conversation among a handful of speakers
(turns of a few seconds, pauses, overlaps), cut into chunks as the pipeline cuts it (8 s every
0.8 s, 20 ms frames as WavLM's), each chunk's speakers sorted into local speakers (several per
chunk) and given an embedding: its speaker's direction plus noise that grows as the speaker
talks less in the chunk. Used by benchmarks/bench_long_recordings.py and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyannote.core import SlidingWindow, SlidingWindowFeature

FRAME_STEP = 0.02  # seconds, WavLM's frames
CHUNK_DURATION = 8.0
CHUNK_STEP = 0.8


@dataclass
class SyntheticRecording:
    """segmentations: (chunks, frames, local speakers) binary SlidingWindowFeature;
    embeddings: (chunks, local speakers, dimension) float32; speakers: (chunks, local
    speakers) the true speaker of each local speaker, -1 where it is silent;
    frames: the frames' SlidingWindow."""

    segmentations: SlidingWindowFeature
    embeddings: np.ndarray
    speakers: np.ndarray
    frames: SlidingWindow


def conversation_activity(duration: float, num_speakers: int, rng: np.random.Generator,
                          mean_turn: float = 3.0) -> np.ndarray:
    """(frames, speakers) bool activity of a conversation of `duration` seconds

    Turns of exponential length (mean `mean_turn` s, at least 0.3 s), each by a speaker other
    than the previous one; the next starts when it ends on average, as much as 0.6 s earlier
    (an overlap) or 0.6 s later (a pause).
    """
    num_frames = int(round(duration / FRAME_STEP))
    activity = np.zeros((num_frames, num_speakers), dtype=bool)
    start, speaker = 0.0, 0
    while start < duration:
        length = max(0.3, rng.exponential(mean_turn))
        first, last = int(start / FRAME_STEP), int((start + length) / FRAME_STEP)
        activity[first:last, speaker] = True
        speaker = (speaker + rng.integers(1, num_speakers)) % num_speakers
        start = max(start + 0.1, start + length + rng.uniform(-0.6, 0.6))
    return activity


def synthetic_recording(duration: float, num_speakers: int = 5, local_speakers: int = 3,
                        dimension: int = 256, noise: float = 0.025,
                        seed: int = 0) -> SyntheticRecording:
    """What the pipeline's steps after the embeddings receive for a `duration` s recording

    Parameters
    ----------
    duration : float
        Seconds of audio (at least one chunk, 8 s).
    num_speakers : int, optional
        Speakers of the conversation. Defaults to 5.
    local_speakers : int, optional
        Local speakers of the segmentation; a chunk's most talkative ones take them. Defaults
        to 3 (pyannote's segmentation-3.0).
    dimension : int, optional
        Embedding dimension. Defaults to 256 (WeSpeaker ResNet34).
    noise : float, optional
        Standard deviation per dimension of the noise of an embedding whose speaker talks
        through the whole chunk; it grows as one over the square root of the share of the
        chunk it talks. Defaults to 0.025: cosine similarity about 0.85 between two such
        embeddings of one speaker, about 0.3 across speakers.
    seed : int, optional
    """
    if duration < CHUNK_DURATION:
        raise ValueError(f"duration={duration}: expected at least one chunk, "
                         f"{CHUNK_DURATION} s.")
    rng = np.random.default_rng(seed)
    activity = conversation_activity(duration, num_speakers, rng)
    frames_per_chunk = int(round(CHUNK_DURATION / FRAME_STEP)) - 1  # 399, as WavLM's
    chunk_step = int(round(CHUNK_STEP / FRAME_STEP))
    num_chunks = (len(activity) - frames_per_chunk) // chunk_step + 1
    segmentations = np.zeros((num_chunks, frames_per_chunk, local_speakers), dtype=np.float32)
    speakers = np.full((num_chunks, local_speakers), -1, dtype=np.int64)
    for c in range(num_chunks):
        window = activity[c * chunk_step: c * chunk_step + frames_per_chunk]
        talk = window.sum(axis=0)
        order = [s for s in np.argsort(-talk, kind="stable")[:local_speakers] if talk[s] > 0]
        # local speakers in a random order, as a segmentation model's permutation is
        slots = rng.permutation(local_speakers)[: len(order)]
        segmentations[c][:, slots] = window[:, order]
        speakers[c, slots] = order

    directions = speaker_directions(num_speakers, dimension, rng)
    talk_share = segmentations.mean(axis=1)  # (chunks, local speakers)
    scale = noise / np.sqrt(np.maximum(talk_share, 1.0 / frames_per_chunk))
    embeddings = rng.normal(size=(num_chunks, local_speakers, dimension)) * scale[..., None]
    embeddings += np.where(speakers[..., None] >= 0, directions[speakers], 0.0)
    # a silent local speaker gets one constant embedding, as the embedding of zero statistics
    embeddings[speakers < 0] = directions.mean(axis=0)
    chunks = SlidingWindow(start=0.0, duration=CHUNK_DURATION, step=CHUNK_STEP)
    frames = SlidingWindow(start=0.0, duration=0.025, step=FRAME_STEP)
    return SyntheticRecording(SlidingWindowFeature(segmentations, chunks),
                              embeddings.astype(np.float32), speakers, frames)


def speaker_directions(num_speakers: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    """(speakers, dimension) unit vectors sharing a common part (cosine similarity about 0.3)."""
    directions = rng.normal(size=(num_speakers, dimension)) + 0.7 * rng.normal(size=dimension)
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def synthetic_plda(dimension: int = 256, num_speakers: int = 200, per_speaker: int = 10,
                   noise: float = 0.025, seed: int = 1):
    """A PLDA estimated from embeddings drawn as `synthetic_recording` draws them (other
    speakers), for VBxClustering on synthetic recordings."""
    from .plda import estimate_plda

    rng = np.random.default_rng(seed)
    directions = speaker_directions(num_speakers, dimension, rng)
    labels = np.repeat(np.arange(num_speakers), per_speaker)
    # talk shares from 0.2 to 1 of the chunk, as clustered embeddings have
    scale = noise / np.sqrt(rng.uniform(0.2, 1.0, size=(len(labels), 1)))
    vectors = directions[labels] + scale * rng.normal(size=(len(labels), dimension))
    return estimate_plda(vectors, [str(label) for label in labels],
                         lda_dimension=min(128, dimension, num_speakers - 1))
