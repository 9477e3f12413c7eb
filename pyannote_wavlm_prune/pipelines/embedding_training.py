"""Training a speaker embedding without the hub, for offline pipelines.

Every clustering but OracleClustering needs a speaker embedding model, and pyannote's
(WeSpeaker ResNet34 in pyannote/speaker-diarization-community-1) lives on the Hugging Face
hub. Where the hub is out of reach:

- `train_embedding(protocol, path)` trains pyannote's x-vector (XVectorMFCC), or its
  WeSpeaker ResNet34 (`architecture="wespeaker-resnet34"`, the architecture of pyannote's
  hub embedding, whose trunk the ONNX embedding runtimes export), with pyannote's own
  SpeakerEmbedding task (ArcFace loss) on a protocol's training speakers, e.g. the project's
  simulated corpus, and saves it as a pyannote checkpoint;
- `XVectorMFCC` is pyannote's, with the frame-wise split of pyannote's WeSpeaker models
  (`forward_frames`, `forward_embedding`), so that a pipeline embeds every speaker of a chunk
  from one pass (see `SpeakerDiarization.get_embeddings`);
- `untrained_embedding()` gives the same architecture with random weights, ready to be
  saved and exported: enough to test the plumbing, useless for clustering quality.

A local copy of a pretrained pyannote embedding (a pytorch_model.bin) works as well: pass
its path wherever a model is expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning
import torch
from pyannote.audio import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.models.embedding import WeSpeakerResNet34
from pyannote.audio.models.embedding import XVectorMFCC as PyannoteXVectorMFCC
from pyannote.audio.tasks import SpeakerEmbedding
from pyannote.database import Protocol

from ..models.checkpoint import save_checkpoint


class XVectorMFCC(PyannoteXVectorMFCC):
    """pyannote's XVectorMFCC (MFCC > TDNN > statistics pooling > Linear), in two parts

    The speaker masks of pyannote's embedding models only weigh the statistics pooling: the
    frame-wise part (MFCC and TDNNs) does not depend on them, and can serve every speaker of a
    chunk at once, as `forward_frames` / `forward_embedding` do for pyannote's WeSpeaker
    models. Weights and outputs are those of pyannote's class. Checkpoints of
    `train_embedding` and `untrained_embedding` name this module (those written before it was
    renamed name `pipelines.embedding`, which re-exports the class).
    """

    def forward_frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Frame-wise features, (batch, features, frames), of waveforms (batch, channel, sample)."""
        outputs = self.mfcc(waveforms).squeeze(dim=1)
        for block in self.tdnns:
            outputs = block(outputs)
        return outputs

    def forward_embedding(self, frames: torch.Tensor, weights: torch.Tensor | None = None
                          ) -> torch.Tensor:
        """Embeddings (batch, dimension), or (batch, speakers, dimension) for weights of shape
        (batch, speakers, frames), of `forward_frames`' output (batch, features, frames)."""
        return self.embedding(self.stats_pool(frames, weights=weights))


class EqualLengthSpeakerEmbedding(SpeakerEmbedding):
    """pyannote's SpeakerEmbedding task (ArcFace), whose batches always stack

    In pyannote 4.0.7, chunks cropped at different start times for the same batch duration
    may differ by one sample, and the default collate function then fails ("stack expects
    each tensor to be equal size"). Chunks are trimmed to the shortest of their batch.
    """

    def collate_fn(self, batch, stage="train"):
        shortest = min(item["X"].shape[-1] for item in batch)
        batch = [{**item, "X": item["X"][..., :shortest]} for item in batch]
        return super().collate_fn(batch, stage=stage)


def untrained_embedding(dimension: int = 128, duration: float = 2.0, seed: int = 0) -> Model:
    """A randomly initialised XVectorMFCC with the specifications of a speaker embedding task

    Parameters
    ----------
    dimension : int, optional
        Embedding dimension. Defaults to 128.
    duration : float, optional
        Chunk duration (s) recorded in its specifications. Defaults to 2.0.
    seed : int, optional
        Seed of the random initialisation. Defaults to 0.

    Returns
    -------
    model : XVectorMFCC
        In eval mode; `save_checkpoint` and `export_pipeline` accept it.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = XVectorMFCC(dimension=dimension)
    # a model without specifications cannot be checkpointed by pyannote
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=duration
    )
    return model.eval()


# architecture -> what train_embedding trains
ARCHITECTURES = {
    "xvector": "pyannote's XVectorMFCC (MFCC, TDNN, statistics pooling), of any dimension",
    "wespeaker-resnet34": "pyannote's WeSpeakerResNet34 (filter banks, ResNet34 trunk, "
                          "statistics pooling), 256 dimensions",
}
RESNET34_DIMENSION = 256


def train_embedding(
    protocol: Protocol,
    checkpoint: str | os.PathLike | None = None,
    dimension: int | None = None,
    duration: float = 2.0,
    min_duration: float | None = 0.5,
    num_classes_per_batch: int = 8,
    num_chunks_per_class: int = 4,
    max_epochs: int = 20,
    seed: int = 0,
    num_workers: int = 0,
    trainer_options: dict | None = None,
    architecture: str = "xvector",
) -> Model:
    """Train a speaker embedding (ArcFace) on a protocol's training speakers

    Parameters
    ----------
    protocol : pyannote.database Protocol
        SpeakerDiarization (or SpeakerVerification) protocol whose files have audio and
        annotation; its training speakers are the classes.
    checkpoint : path, optional
        Where to save the trained model (pyannote checkpoint; `Model.from_pretrained` and
        `export_pipeline` read it).
    dimension : int, optional
        Embedding dimension: any for "xvector" (defaults to 128), 256 for
        "wespeaker-resnet34" (its only one, the default).
    duration, min_duration : float, optional
        Longest and shortest training chunk (s). Defaults to 2.0 and 0.5.
    num_classes_per_batch, num_chunks_per_class : int, optional
        Batch composition: speakers per batch, chunks per speaker. Defaults to 8 x 4.
    max_epochs : int, optional
        Training epochs. Defaults to 20.
    seed : int, optional
        Seed of initialisation and chunk sampling. Defaults to 0.
    num_workers : int, optional
        Data loading workers. Defaults to 0 (in-process, safest on small machines).
    trainer_options : dict, optional
        Extra `lightning.Trainer` arguments (e.g. {"limit_train_batches": 10}).
    architecture : str, optional
        One of ARCHITECTURES: "xvector" (default) or "wespeaker-resnet34".

    Returns
    -------
    model : XVectorMFCC or WeSpeakerResNet34
        Trained model in eval mode.
    """
    if max_epochs < 1:
        raise ValueError(f"max_epochs={max_epochs}: expected at least 1.")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}: expected one of {list(ARCHITECTURES)}.")
    if architecture == "wespeaker-resnet34" and dimension not in (None, RESNET34_DIMENSION):
        raise ValueError(f"dimension={dimension}: architecture='wespeaker-resnet34' has "
                         f"{RESNET34_DIMENSION} dimensions only.")
    lightning.seed_everything(seed, verbose=False)
    task = EqualLengthSpeakerEmbedding(
        protocol,
        duration=duration,
        min_duration=min_duration,
        num_classes_per_batch=num_classes_per_batch,
        num_chunks_per_class=num_chunks_per_class,
        num_workers=num_workers,
    )
    if architecture == "xvector":
        model = XVectorMFCC(dimension=dimension or 128, task=task)
    else:
        model = WeSpeakerResNet34(task=task)
    options = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        # pyannote's embedding task has no validation set on diarization protocols
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
    }
    options.update(trainer_options or {})
    lightning.Trainer(**options).fit(model)
    # the ArcFace classifier (one row per training speaker) only serves training: without
    # it the checkpoint is smaller and loads without a strict-loading warning
    if hasattr(model, "loss_func"):
        del model.loss_func
    model.eval()
    if checkpoint is not None:
        save_checkpoint(model, Path(checkpoint))
    return model
