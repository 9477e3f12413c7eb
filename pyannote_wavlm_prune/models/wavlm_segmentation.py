"""WavLMSegmentation: a pyannote segmentation model with a (prunable) WavLM front end."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pyannote.audio.core.model import Model
from pyannote.audio.core.task import Task
from pyannote.audio.utils.params import merge_dict
from torch import nn
from torchaudio.models import Conformer
from transformers import PretrainedConfig

from ..files import atomic_path
from ..frontends.config import resolve_wavlm
from ..frontends.frontend import WavLMFrontEnd
from ..frontends.gating import attach_frontend_gates
from ..frontends.structure import Structure
from ..frontends.variants import NUMERICS, numerics_of, variant_from_numerics
from ..options import merge_options

WAVLM_SAMPLE_RATE = 16000


class WavLMSegmentation(Model):
    """Segmentation model with a self-supervised front end (WavLM, HuBERT or wav2vec 2.0)

    front end > weighted sum of its L+1 hidden states > Linear + LayerNorm > Conformer > Classifier

    Parameters
    ----------
    wavlm : str, path, transformers config or dict, optional
        The front end: a Hugging Face model name or local directory written by
        `save_pretrained` of a WavLM, HuBERT or wav2vec 2.0 model (pretrained weights are
        loaded), or a `WavLMConfig`, `HubertConfig`, `Wav2Vec2Config` or config dict (random
        initialisation). Defaults to "microsoft/wavlm-base-plus". Whatever is given, the full
        config dict is what is saved in the checkpoint, so that it reloads offline.
    structure : Structure or dict, optional
        Pruned WavLM structure (a `Structure`, or its dict {"conv_channels": ...,
        "kept_heads": ..., "ffn_widths": ...}) relative to `wavlm`'s architecture. Defaults to the unpruned architecture. Set by
        `prune()`; give it to instantiate a published structure (random weights).
    gates : sequence of str, optional
        Unit kinds carrying hard-concrete gates (among `frontends.UNITS`). Set by
        `attach_gates()`, so that a gated checkpoint reloads with its gates.
    gates_objective : dict, optional
        {"objective": "params" or "macs", "num_samples": int}: what the gates were trained
        to prune (set by `DistillPrune.student()`), so that `prune(model, sparsity=...)`
        finishes in that metric.
    freeze_wavlm : bool, optional
        Keep WavLM's weights fixed (and its dropout off). Defaults to False.
    cnn_gradient_scale : float, optional
        Factor applied to the gradient that flows back into WavLM's CNN. Defaults to 0.1.
    projection : dict, optional
        {"dimension": 256}: width of the Linear + LayerNorm between WavLM and the Conformer.
    conformer : dict, optional
        Keyword arguments of `torchaudio.models.Conformer`. Defaults to {"num_layers": 4,
        "num_heads": 4, "ffn_dim": 1024, "depthwise_conv_kernel_size": 31, "dropout": 0.1}.
    learning_rate : dict, optional
        AdamW learning rates {"wavlm": 2e-5, "backend": 1e-3}: WavLM, and everything else.
    variant : str, optional
        The numerics where implementations differ (`frontends.variants`): "default" (this
        project's) or "diarizen" (what DiariZen's models compute; set by `import-diarizen`).
    sample_rate : int, optional
        Must be 16000, WavLM's rate.
    num_channels : int, optional
        Must be 1 (mono).
    task : Task, optional
        Task addressed by the model.
    """

    WAVLM_DEFAULT = "microsoft/wavlm-base-plus"
    PROJECTION_DEFAULTS = {"dimension": 256}
    CONFORMER_DEFAULTS = {
        "num_layers": 4,
        "num_heads": 4,
        "ffn_dim": 1024,
        "depthwise_conv_kernel_size": 31,
        "dropout": 0.1,
    }
    LEARNING_RATE_DEFAULTS = {"wavlm": 2e-5, "backend": 1e-3}

    def __init__(
        self,
        wavlm: str | os.PathLike | PretrainedConfig | Mapping[str, Any] | None = None,
        structure: Structure | Mapping[str, Any] | None = None,
        gates: Sequence[str] | None = None,
        gates_objective: Mapping[str, Any] | None = None,
        freeze_wavlm: bool = False,
        cnn_gradient_scale: float = 0.1,
        projection: dict | None = None,
        conformer: dict | None = None,
        learning_rate: dict | None = None,
        variant: str | Mapping[str, Any] = "default",
        sample_rate: int = WAVLM_SAMPLE_RATE,
        num_channels: int = 1,
        task: Task | None = None,
        **numerics,
    ):
        # checkpoints written before variants held the numerics as hyper-parameters
        unknown = sorted(set(numerics) - set(NUMERICS))
        if unknown:
            raise TypeError(f"WavLMSegmentation got unexpected keyword arguments {unknown}.")
        if numerics:
            if variant != "default":
                raise ValueError(f"variant={variant!r} and numerics {sorted(numerics)}: expected "
                                 "one of them (the numerics are those of a variant).")
            variant = variant_from_numerics(numerics)
        numerics = numerics_of(variant)
        if sample_rate != WAVLM_SAMPLE_RATE:
            raise ValueError(
                f"sample_rate={sample_rate}: WavLM works at {WAVLM_SAMPLE_RATE} Hz only "
                "(pyannote resamples audio files to the model's rate)."
            )
        if num_channels != 1:
            raise ValueError(f"num_channels={num_channels}: WavLM expects mono audio (1 channel).")
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)

        projection = merge_dict(self.PROJECTION_DEFAULTS, projection)
        conformer = merge_dict(self.CONFORMER_DEFAULTS, conformer)
        learning_rate = merge_options("learning_rate", self.LEARNING_RATE_DEFAULTS, learning_rate)

        config, pretrained_state = resolve_wavlm(self.WAVLM_DEFAULT if wavlm is None else wavlm)
        frontend_options = {
            "cnn_gradient_scale": cnn_gradient_scale,
            **{key: numerics[key] for key in ("conv_output_scale", "pruned_norms",
                                              "waveform_norm_eps")},
        }
        if structure is not None:
            frontend_options["structure"] = structure
        self.frontend = WavLMFrontEnd(config, **frontend_options)
        if pretrained_state is not None:
            if structure is not None:
                raise ValueError(
                    "structure= cannot be combined with pretrained weights: prune() a model "
                    "loaded from pretrained weights instead."
                )
            self.frontend.load_pretrained(pretrained_state)

        self.save_hyperparameters(
            "wavlm",
            "structure",
            "gates",
            "gates_objective",
            "freeze_wavlm",
            "cnn_gradient_scale",
            "projection",
            "conformer",
            "learning_rate",
        )
        self.hparams.variant = variant
        # the full config, never a name or a path, so that the checkpoint reloads offline
        self.hparams.wavlm = config.to_dict()
        # plain lists: what checkpoints have always held
        self.hparams.structure = None if structure is None else self.frontend.structure.to_dict()
        self.hparams.projection = projection
        self.hparams.conformer = conformer
        self.hparams.learning_rate = learning_rate

        if gates:
            attach_frontend_gates(self.frontend, units=tuple(gates))
            self.hparams.gates = list(gates)

        num_hidden_states = self.frontend.num_layers + 1
        self.layer_weighting = numerics["layer_weighting"]
        if self.layer_weighting == "softmax":
            # softmax(0) = uniform average of the hidden states at initialisation
            self.layer_weights = nn.Parameter(torch.zeros(num_hidden_states))
        else:
            # variant "diarizen": raw weights, uniform average
            self.layer_weights = nn.Parameter(torch.full((num_hidden_states,), 1 / num_hidden_states))
        self.projection = nn.Linear(config.hidden_size, projection["dimension"])
        self.projection_norm = nn.LayerNorm(projection["dimension"])
        self.conformer = Conformer(input_dim=projection["dimension"], **conformer)

        self.freeze_wavlm = freeze_wavlm
        for parameter in self.frontend.parameters():
            parameter.requires_grad = not freeze_wavlm

    @property
    def numerics(self) -> dict[str, Any]:
        """The four numerics of the model's variant (`frontends.variants`)."""
        return numerics_of(self.hparams.variant)

    @property
    def structure(self) -> Structure | None:
        """Pruned WavLM structure, or None for the unpruned architecture."""
        return self.frontend.structure

    @property
    def dimension(self) -> int:
        """Number of output classes (powerset classes for powerset tasks)."""
        if isinstance(self.specifications, tuple):
            raise ValueError("WavLMSegmentation does not support multi-tasking.")
        if self.specifications.powerset:
            return self.specifications.num_powerset_classes
        return len(self.specifications.classes)

    def build(self):
        self.classifier = nn.Linear(self.hparams.projection["dimension"], self.dimension)
        self.activation = self.default_activation()

    def prepare_data(self):
        """The task's metadata cache, written next to its place and renamed into it

        pyannote writes the cache in place, and takes any non-empty file there for a finished
        one: a write cut short (a SIGTERM, a full disk) would fail every later run.
        """
        cache = getattr(self.task, "cache", None)
        if cache is None or (cache.exists() and cache.stat().st_size > 0):
            return super().prepare_data()
        try:
            with atomic_path(cache) as temporary:
                self.task.cache = temporary  # empty: pyannote prepares and writes it
                super().prepare_data()
        finally:
            self.task.cache = cache

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_wavlm:
            # a frozen front end is a fixed feature extractor: no dropout either
            self.frontend.eval()
        return self

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for `num_samples` input samples."""
        return self.frontend.num_frames(num_samples)

    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Number of input samples seen by `num_frames` consecutive output frames."""
        return self.frontend.receptive_field_size(num_frames)

    def receptive_field_center(self, frame: int = 0) -> float:
        """Index (possibly half-integer) of the input sample at the centre of `frame`'s field.

        WavLM's first frame sees samples 0..399, whose centre is 199.5: pyannote's generic
        helper floors it, which would shift every frame by half a sample.
        """
        return frame * self.frontend.frame_step() + (self.receptive_field_size(1) - 1) / 2

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Frame-wise (powerset) log-probabilities

        waveforms (Tensor): shape (batch, 1, samples), 16 kHz
        returns (Tensor): shape (batch, frames, classes)
        """
        if waveforms.dim() != 3 or waveforms.shape[1] != 1:
            raise ValueError(
                f"waveforms has shape {tuple(waveforms.shape)}: expected (batch, 1, samples)."
            )
        num_samples = waveforms.shape[-1]
        if self.frontend.num_frames(num_samples) < 1:
            raise ValueError(
                f"waveforms has {num_samples} samples: WavLM needs at least "
                f"{self.receptive_field_size(1)} (one {self.receptive_field_size(1) / 16:.0f} ms frame)."
            )
        hidden_states = self.frontend(waveforms[:, 0])
        if self.layer_weighting == "softmax":
            weights = torch.softmax(self.layer_weights, dim=0)
        else:
            # variant "diarizen": the raw weights
            weights = self.layer_weights
        features = weights[0] * hidden_states[0]
        for weight, hidden in zip(weights[1:], hidden_states[1:]):
            features = features + weight * hidden
        features = self.projection_norm(self.projection(features))
        batch_size, num_frames, _ = features.shape
        lengths = torch.full((batch_size,), num_frames, dtype=torch.long, device=features.device)
        features, _ = self.conformer(features, lengths)
        return self.activation(self.classifier(features))

    def parameter_groups(self) -> list[dict]:
        """AdamW parameter groups: WavLM and the back end, each with its learning rate."""
        wavlm, backend = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            (wavlm if name.startswith("frontend.") else backend).append(parameter)
        learning_rate = self.hparams.learning_rate
        groups = [{"params": backend, "lr": learning_rate["backend"], "name": "backend"}]
        if wavlm:
            groups.append({"params": wavlm, "lr": learning_rate["wavlm"], "name": "wavlm"})
        return groups

    def configure_optimizers(self):
        # a task with an objective of its own (DistillPrune) decides the groups and schedule
        task_groups = getattr(self.task, "parameter_groups", None)
        groups = task_groups(self) if task_groups is not None else self.parameter_groups()
        optimizer = torch.optim.AdamW(groups)
        task_scheduler = getattr(self.task, "lr_scheduler", None)
        scheduler = task_scheduler(optimizer) if task_scheduler is not None else None
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

