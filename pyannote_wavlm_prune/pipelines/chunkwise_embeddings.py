"""Speaker embeddings per chunk: one pass of the embedding model's frame-wise part per chunk.

pyannote 4.0.7's `SpeakerDiarization.get_embeddings` runs the whole embedding model once per
(chunk, local speaker) pair, inactive speakers included, although the speaker masks of its
WeSpeaker models only weigh the statistics pooling. An embedding model that splits into
`forward_frames(waveforms)` and `forward_embedding(frames, weights)` with (batch, speakers,
frames) weights (pyannote's WeSpeaker models, this project's XVectorMFCC) serves every speaker
of a chunk from one pass (`ChunkwiseEmbeddings`), with the same embeddings to a few float32
ulps. Whether a model splits so is checked by running it (`frame_wise_split_problem`), and
said once, when the pipeline is built (`chunkwise_model`).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
from pyannote.audio import Audio
from pyannote.audio.core.io import AudioFile
from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
from pyannote.core import SlidingWindow, SlidingWindowFeature

log = logging.getLogger(__name__)


def frame_wise_split_problem(model) -> str | None:
    """Why `model` cannot embed all the speakers of a chunk from one frame-wise pass, or None

    The split is what pyannote's WeSpeaker models offer: `forward_frames(waveforms)` and
    `forward_embedding(frames, weights)` with (batch, speakers, frames) weights. It is checked
    by running it once on a short random input against the model's own forward with each
    speaker's weights, not by class name.
    """
    name = type(model).__name__
    if not (callable(getattr(model, "forward_frames", None))
            and callable(getattr(model, "forward_embedding", None))):
        return f"{name} has no forward_frames / forward_embedding"
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    sample_rate = model.audio.sample_rate if hasattr(model, "audio") else 16000
    waveforms = torch.randn(1, 1, 2 * sample_rate, generator=generator).to(device)
    weights = (torch.rand(1, 2, 100, generator=generator) > 0.5).float().to(device)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            joint = model.forward_embedding(model.forward_frames(waveforms), weights=weights)
            each = torch.stack([model(waveforms, weights=weights[:, k]) for k in range(2)], dim=1)
    except Exception as error:  # any failure means: not this split
        return f"{name}'s forward_embedding fails on (batch, speakers, frames) weights ({error})"
    if joint.shape != each.shape:
        return f"{name}'s forward_embedding gives shape {tuple(joint.shape)}, not {tuple(each.shape)}"
    # a few float32 ulps of the embeddings' scale (another GEMM shape); a model whose split
    # computes something else differs by the scale itself
    scale = each.abs().max().item()
    if not (joint - each).abs().max().item() <= 1e-4 * max(scale, 1.0):
        return f"{name}'s forward_frames / forward_embedding do not compute its forward"
    return None


def chunkwise_model(embedding: PretrainedSpeakerEmbedding, chunkwise: bool | None):
    """The embedding model whose frame-wise part serves all speakers of a chunk, or None

    embedding: pyannote's wrapper of the pipeline's embedding model; chunkwise: the pipeline's
    `chunkwise_embeddings` (None: whenever the model splits; True: it must; False: never).
    Said once, here: which path the pipeline's embeddings take, and why.
    """
    if chunkwise is False:
        return None
    model = getattr(embedding, "model_", None)
    if model is None:  # e.g. SpeechBrain's or NeMo's embeddings, not a pyannote Model
        reason = f"{type(embedding).__name__} wraps no pyannote Model"
    else:
        reason = frame_wise_split_problem(model)
    if reason is None:
        log.info("Speaker embeddings: one pass of %s's frame-wise part per chunk with an "
                 "active speaker, pooled per speaker.", type(model).__name__)
        return model
    if chunkwise:
        raise ValueError(f"chunkwise_embeddings=True, but {reason}: expected an embedding "
                         "model with forward_frames and forward_embedding (e.g. pyannote's "
                         "WeSpeaker models), or chunkwise_embeddings=None.")
    warnings.warn(f"Speaker embeddings take pyannote's path, one pass of the whole model per "
                  f"(chunk, speaker) pair, active or not: {reason}.", stacklevel=3)
    return None


class ChunkwiseEmbeddings:
    """(chunk, speaker) embeddings from one frame-wise pass per chunk with an active speaker

    model : the embedding Model, split in `forward_frames` / `forward_embedding`
        (`chunkwise_model`).
    embedding : PretrainedSpeakerEmbedding
        pyannote's wrapper of `model`: its sample rate, shortest input, dimension and device.
    audio : Audio
        What crops the chunks' waveforms (the pipeline's, mono at the embedding's rate).
    """

    def __init__(self, model: torch.nn.Module, embedding: PretrainedSpeakerEmbedding,
                 audio: Audio):
        self.model = model
        self.embedding = embedding
        self.audio = audio

    def masks(self, binary_segmentations: SlidingWindowFeature,
              exclude_overlap: bool) -> np.ndarray:
        """(chunks, speakers, frames) float32 masks pyannote's path would pool each pair with

        binary_segmentations : (chunks, frames, speakers); NaN counts as inactive. With
        `exclude_overlap`, pyannote's rule: the frames where fewer than two speakers are
        active, unless they are too few for the embedding model, then the whole mask.
        """
        data = binary_segmentations.data
        num_frames = data.shape[1]
        masks = np.nan_to_num(data, nan=0.0).astype(np.float32)
        if exclude_overlap:
            num_samples = binary_segmentations.sliding_window.duration * self.embedding.sample_rate
            min_num_frames = math.ceil(num_frames * self.embedding.min_num_samples / num_samples)
            clean_frames = 1.0 * (np.sum(data, axis=2, keepdims=True) < 2)
            clean = np.nan_to_num(data * clean_frames, nan=0.0).astype(np.float32)
            enough = np.sum(clean, axis=1, keepdims=True) > min_num_frames
            masks = np.where(enough, clean, masks)
        return masks.transpose(0, 2, 1)

    def __call__(self, file: AudioFile, chunks: SlidingWindow, masks: np.ndarray,
                 batch_size: int, hook=None) -> np.ndarray:
        """(chunks, speakers, dimension) embeddings, one frame-wise pass per active chunk

        masks : (chunks, speakers, frames) np.ndarray (`masks`); chunks : the chunks'
        SlidingWindow; batch_size : chunks per pass. A chunk without an active speaker is
        never read nor embedded: its speakers get what pyannote's path gives them (statistics
        of an all-zero mask are zeros, so the embedding of zero statistics), so that
        clustering sees the same input. `hook` is called as pyannote's path calls it.
        """
        model, device = self.model, self.embedding.device
        num_chunks, num_speakers, num_frames = masks.shape
        active = np.flatnonzero(np.any(masks > 0, axis=(1, 2)))
        batches = [active[i:i + batch_size] for i in range(0, len(active), batch_size)]
        if hook is not None:
            hook("embeddings", None, total=len(batches), completed=0)
        embeddings = np.empty((num_chunks, num_speakers, self.embedding.dimension), np.float32)
        frames = None
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as pyannote's embedding wrapper does
            for completed, batch in enumerate(batches, 1):
                # one batch of waveforms at a time: memory does not grow with the file
                waveforms = torch.vstack([self.audio.crop(file, chunks[c], mode="pad")[0][None]
                                          for c in batch])
                frames = model.forward_frames(waveforms.to(device))
                weights = torch.from_numpy(masks[batch]).to(device)
                embedded = model.forward_embedding(frames, weights=weights).cpu().numpy()
                embeddings[batch] = embedded
                if hook is not None:
                    hook("embeddings", embedded, total=len(batches), completed=completed)
            silent = np.setdiff1d(np.arange(num_chunks), active)
            if len(silent):
                if frames is None:  # no active speaker in the whole file: any finite frames
                    length = int(round(chunks.duration * self.embedding.sample_rate))
                    frames = model.forward_frames(torch.zeros(1, 1, length, device=device))
                nothing = torch.zeros(1, 1, num_frames, device=device)
                embeddings[silent] = model.forward_embedding(frames[:1], weights=nothing).cpu().numpy()
        return embeddings
