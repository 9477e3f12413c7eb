"""A self-supervised model (WavLM, HuBERT, wav2vec 2.0) as a front end: waveform in, all L+1
hidden states out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from .architectures import architecture_of
from .config import conv_frames
from .folding import build_structured_wavlm, check_pruned_norms
from .structure import Structure

# Wav2Vec2FeatureExtractor's per-utterance normalisation constant (WavLM Large expects it)
NORMALISATION_EPS = 1e-7


class ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass, gradient multiplied by `scale` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class WavLMFrontEnd(nn.Module):
    """SSL feature extractor returning the input of every transformer layer and the last output

    CNN > (gradient x 0.1) > feature projection > positional convolution > L transformer layers

    The modules are those of the config's transformers model (`WavLMModel`, `HubertModel` or
    `Wav2Vec2Model`, see `architectures.py`), kept under `self.wavlm` whatever the family (the
    name every checkpoint's state dict has, so pretrained state dicts load as they are); the
    loop over them is ours, so that every hidden state is returned without transformers'
    output recording and pruned layers can be swapped in.

    Hidden state 0 is the input of layer 1, hidden state j the output of layer j, as in
    `WavLMModel(..., output_hidden_states=True).hidden_states` of transformers 5: for pre-LN
    configs (Large, "stable layer norm") the last one is taken before the encoder's final
    layer norm, which is therefore never used and is removed (it would be a parameter without
    gradient under DDP).

    Parameters
    ----------
    config : WavLMConfig, HubertConfig or Wav2Vec2Config
        Architecture. Configs with a layer-normalised CNN (the Large family) get each input
        normalised to zero mean and unit variance, as WavLM Large was pre-trained.
    cnn_gradient_scale : float, optional
        Factor applied to the gradient flowing back into the CNN. Defaults to 0.1.
    structure : Structure or dict, optional
        Pruned sizes relative to `config` (a `Structure`, or its dict): the modules are built
        at those sizes (random weights). `config` stays the original (teacher) architecture.
        Defaults to None: unpruned, stock modules.
    conv_output_scale : bool, optional
        Multiply the last CNN layer's output (after its activation, before the feature
        projection) by a fixed per-channel scale, the buffer `conv_output_scale` of shape
        (kept channels of the last CNN layer,). DiariZen's pruned models keep their last
        channel mask there (`dummy_weight`). Defaults to False: no scale.
    pruned_norms : {"original", "kept"}, optional
        LayerNorms over pruned CNN channels (feature projection, Large's CNN layers)
        normalise as if the pruned channels were zeros among the original count
        ("original", what pruning by gates computes) or over the kept channels alone
        ("kept", plain LayerNorms: DiariZen's pruned models). Defaults to "original".
    waveform_norm_eps : float, optional
        Epsilon of the per-waveform normalisation of the Large family. Defaults to 1e-7
        (Wav2Vec2FeatureExtractor's); DiariZen normalises with a layer norm of eps 1e-5.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        cnn_gradient_scale: float = 0.1,
        structure: Structure | Mapping[str, Any] | None = None,
        conv_output_scale: bool = False,
        pruned_norms: str = "original",
        waveform_norm_eps: float = NORMALISATION_EPS,
    ):
        super().__init__()
        check_pruned_norms(pruned_norms)
        self.config = config
        self.cnn_gradient_scale = cnn_gradient_scale
        self.pruned_norms = pruned_norms
        architecture = architecture_of(config)
        architecture.check(config)
        self.architecture = architecture
        # `wavlm` holds any family's transformers model (a HubertModel too): the name stays,
        # for every state dict and checkpoint names its weights "frontend.wavlm.*"
        if structure is None:
            self.structure = None
            self.wavlm = architecture.model_class(config)
        else:
            self.structure = Structure.from_dict(structure, config)
            self.wavlm = build_structured_wavlm(self.structure, pruned_norms=pruned_norms)
        if config.do_stable_layer_norm:
            del self.wavlm.encoder.layer_norm
        self.normalize_waveform = config.feat_extract_norm == "layer"
        self.waveform_norm_eps = float(waveform_norm_eps)
        # Option (DiariZen import): a fixed per-channel scale of the last CNN output. A
        # persistent buffer, not a parameter: it is not trained (DiariZen keeps it fixed) and
        # exists only when asked for, so that default state dicts are unchanged.
        if conv_output_scale:
            last_channels = self.wavlm.feature_extractor.conv_layers[-1].conv.out_channels
            self.register_buffer("conv_output_scale", torch.ones(last_channels))
        else:
            self.conv_output_scale = None

    @property
    def num_layers(self) -> int:
        """Number of transformer layers L (there are L + 1 hidden states)."""
        return len(self.wavlm.encoder.layers)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the weights of the transformers model, checking that none is missing."""
        missing, _ = self.wavlm.load_state_dict(state_dict, strict=False)
        if missing:
            raise ValueError(f"Pretrained {self.architecture.label} weights lack {len(missing)} tensors: {missing[:5]}...")

    def num_frames(self, num_samples: int) -> int:
        """Number of frames the front end outputs for `num_samples` input samples (0 if too short)."""
        return conv_frames(self.config, num_samples)[-1]

    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Number of input samples seen by `num_frames` consecutive output frames."""
        size = num_frames
        for kernel, stride in zip(
            reversed(self.config.conv_kernel), reversed(self.config.conv_stride), strict=True
        ):
            size = (size - 1) * stride + kernel
        return size

    def frame_step(self) -> int:
        """Number of input samples between two consecutive frames."""
        return self.receptive_field_size(2) - self.receptive_field_size(1)

    def extract_features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """CNN features

        waveforms (Tensor): shape (batch, samples)
        returns (Tensor): shape (batch, frames, channels of the last CNN layer)
        """
        if self.normalize_waveform:
            mean = waveforms.mean(dim=-1, keepdim=True)
            var = waveforms.var(dim=-1, keepdim=True, unbiased=False)
            waveforms = (waveforms - mean) / torch.sqrt(var + self.waveform_norm_eps)
        features = waveforms[:, None]
        for conv_layer in self.wavlm.feature_extractor.conv_layers:
            features = conv_layer(features)
        if self.conv_output_scale is not None:
            # Option (DiariZen import): after the last activation, before the projection's norm
            features = features * self.conv_output_scale[:, None]
        if self.training and self.cnn_gradient_scale != 1.0:
            features = ScaleGradient.apply(features, self.cnn_gradient_scale)
        return features.transpose(1, 2)

    def forward(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        """All hidden states

        waveforms (Tensor): shape (batch, samples), 16 kHz
        returns (list of L + 1 Tensors): each of shape (batch, frames, hidden_size)
        """
        features = self.extract_features(waveforms)
        hidden_states = self.wavlm.feature_projection(features)
        if isinstance(hidden_states, tuple):  # (projected, normalised): all but HuBERT's
            hidden_states = hidden_states[0]
        encoder = self.wavlm.encoder
        hidden_states = hidden_states + encoder.pos_conv_embed(hidden_states)
        if not self.config.do_stable_layer_norm:
            hidden_states = encoder.layer_norm(hidden_states)
        hidden_states = encoder.dropout(hidden_states)
        return [hidden_states, *self.architecture.run_layers(encoder.layers, hidden_states)]
