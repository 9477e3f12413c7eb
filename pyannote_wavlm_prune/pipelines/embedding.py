"""Where the speaker embedding trained without the hub lived before `embedding_training.py`.

Checkpoints written by `train_embedding` and `untrained_embedding` before the move name their
class `pyannote_wavlm_prune.pipelines.embedding.XVectorMFCC` (their "pyannote.audio" block):
this module keeps that path, and the functions earlier documents imported from here,
importable. New code imports from `pyannote_wavlm_prune.pipelines.embedding_training`.
"""

from .embedding_training import (
    EqualLengthSpeakerEmbedding,
    XVectorMFCC,
    train_embedding,
    untrained_embedding,
)

__all__ = ["EqualLengthSpeakerEmbedding", "XVectorMFCC", "train_embedding", "untrained_embedding"]
