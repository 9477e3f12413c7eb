"""The seam between the pruning core and a self-supervised front end's architecture.

One `Architecture` per family of transformers models says what the pruning core needs to
know of it, and nothing else names a family:

- its transformers classes (config, model, the CNN layer kinds, the stock attention);
- which pruned attention module replaces the stock one (`pruned_attention`), and what a
  removed attention block becomes (`removed_attention`);
- its own cost terms: the parts no unit prunes (`fixed_params`, `fixed_macs`) and what a
  head costs beyond its q, k, v and out_proj slices (`head_params`, `head_macs`), e.g.
  WavLM's gated relative position bias;
- its own per-head tensors when heads are pruned (`fold_heads`);
- how the encoder layers run (`run_layers`: WavLM passes a position bias along).

The module paths the unit kinds act on are the same in every family here (transformers
names them alike): `feature_extractor.conv_layers[l].{conv, layer_norm}`,
`feature_projection.{layer_norm, projection}`, `encoder.pos_conv_embed`,
`encoder.layers[j].{attention, layer_norm, feed_forward, final_layer_norm}`, attention
`{q,k,v,out}_proj`, FFN `{intermediate,output}_dense`.

Adding a family: one subclass here (or in a module of its own) registered in
`ARCHITECTURES`, and its pruned attention module if its attention is not plain
multi-head attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import (
    HubertConfig,
    HubertModel,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)
from transformers.models.hubert import modeling_hubert
from transformers.models.wav2vec2 import modeling_wav2vec2
from transformers.models.wavlm import modeling_wavlm

from .attention import PrunedSelfAttention, PrunedWavLMAttention

State = dict[str, torch.Tensor]


class Architecture:
    """What the pruning core needs of one family of self-supervised models (see module)."""

    name = ""  # this project's name for the family
    label = ""  # its name for a person
    model_type = ""  # transformers' config.model_type
    config_class: type[PretrainedConfig] = PretrainedConfig
    model_class: type[PreTrainedModel] = PreTrainedModel
    stock_attention: type[nn.Module] = nn.Module
    pruned_attention_class: type[nn.Module] = nn.Module
    # CNN layer classes by norm: GroupNorm (Base layer 0), LayerNorm (Large), none
    group_norm_conv: type[nn.Module] = nn.Module
    layer_norm_conv: type[nn.Module] = nn.Module
    no_norm_conv: type[nn.Module] = nn.Module
    # whether the stock attention still runs once its Linears are dynamically quantised
    stock_attention_quantizes = True

    def __repr__(self) -> str:
        return f"<{self.name} architecture>"

    def check(self, config: PretrainedConfig) -> None:
        """Raise if `config` uses a part of the family the pruning core does not handle."""

    def projection_has_norm(self, config: PretrainedConfig) -> bool:
        """Whether the feature projection normalises the CNN features first."""
        return True

    def head_dim(self, config: PretrainedConfig) -> int:
        return config.hidden_size // config.num_attention_heads

    def pruned_attention(self, config: PretrainedConfig, layer: int,
                         kept_heads: Sequence[int]) -> nn.Module:
        """The attention module of transformer layer `layer` computing `kept_heads` only."""
        raise NotImplementedError

    def removed_attention(self, config: PretrainedConfig, layer: int) -> nn.Module:
        """What a removed attention block of layer `layer` becomes (adds nothing)."""
        raise NotImplementedError

    def fixed_params(self, config: PretrainedConfig) -> int:
        """Parameters no unit kind prunes: positional convolution, post-LN norms."""
        E = config.hidden_size
        kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        total = E * (E // groups) * kernel + E  # positional convolution weight and bias
        if getattr(config, "conv_pos_batch_norm", False):
            total += 2 * E  # a BatchNorm before the convolution instead of a weight norm
        else:
            total += kernel  # weight-norm magnitude (1, 1, k)
        if not config.do_stable_layer_norm:
            # encoder norm and two norms per layer (pre-LN norms go with their blocks; pre-LN
            # configs drop the encoder norm, see WavLMFrontEnd)
            total += 2 * E + 4 * E * config.num_hidden_layers
        return total

    def fixed_macs(self, config: PretrainedConfig, frames: list[int]) -> int:
        """MACs of the positional convolution (never pruned), for CNN output lengths."""
        E = config.hidden_size
        kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        positional_frames = frames[-1] + 2 * (kernel // 2) - kernel + 1
        return positional_frames * E * (E // groups) * kernel

    def head_params(self, config: PretrainedConfig, heads, any_head):
        """Parameters of a layer's `heads` heads beyond their q, k, v, out_proj slices

        `any_head`: 1 if the layer keeps a head (or its probability, under gates).
        """
        return 0

    def head_macs(self, config: PretrainedConfig, heads, num_frames: int):
        """MACs of a layer's `heads` heads beyond projections, scores and weighted values."""
        return 0

    def fold_heads(self, state: State, prefix: str, kept: torch.Tensor | None) -> None:
        """Keep the family's own per-head tensors of the attention at `prefix`

        kept: positions of the kept heads among those the state has; None: none kept.
        """

    def run_layers(self, layers: nn.ModuleList, hidden_states: torch.Tensor) -> list[torch.Tensor]:
        """The output of every transformer layer, in order."""
        outputs = []
        for layer in layers:
            hidden_states = layer(hidden_states)
            if isinstance(hidden_states, tuple):  # transformers < 5 returns (states, ...)
                hidden_states = hidden_states[0]
            outputs.append(hidden_states)
        return outputs


class WavLMArchitecture(Architecture):
    """WavLM: wav2vec 2.0's layout with a gated relative position bias in every attention."""

    name = model_type = "wavlm"
    label = "WavLM"
    config_class, model_class = WavLMConfig, WavLMModel
    stock_attention = modeling_wavlm.WavLMAttention
    pruned_attention_class = PrunedWavLMAttention
    group_norm_conv = modeling_wavlm.WavLMGroupNormConvLayer
    layer_norm_conv = modeling_wavlm.WavLMLayerNormConvLayer
    no_norm_conv = modeling_wavlm.WavLMNoLayerNormConvLayer
    # stock WavLMAttention reads q_proj.bias directly (F.multi_head_attention_forward)
    stock_attention_quantizes = False

    def pruned_attention(self, config, layer, kept_heads):
        return PrunedWavLMAttention(
            config.hidden_size, config.num_attention_heads, kept_heads,
            dropout=config.attention_dropout, num_buckets=config.num_buckets,
            max_distance=config.max_bucket_distance, has_relative_position_bias=layer == 0,
        )

    def removed_attention(self, config, layer):
        # no parameter but layer 0's table, which every layer reads: it passes the bias on
        return PrunedWavLMAttention(
            config.hidden_size, config.num_attention_heads, [],
            num_buckets=config.num_buckets, max_distance=config.max_bucket_distance,
            has_relative_position_bias=layer == 0, has_output=False,
        )

    def fixed_params(self, config):
        # layer 0's relative position table, kept whole whatever heads remain
        return super().fixed_params(config) + config.num_buckets * config.num_attention_heads

    def head_params(self, config, heads, any_head):
        d = self.head_dim(config)
        # gru_rel_pos_const per head; the gate projection d -> 8 once per layer with a head
        return heads + (8 * d + 8) * any_head

    def head_macs(self, config, heads, num_frames):
        return 8 * num_frames * self.head_dim(config) * heads  # gate projection (d -> 8)

    def fold_heads(self, state, prefix, kept):
        if kept is None:
            for key in [key for key in state if key.startswith(f"{prefix}.gru_rel_pos_linear.")]:
                del state[key]
            state.pop(f"{prefix}.gru_rel_pos_const", None)
            return
        const = state[f"{prefix}.gru_rel_pos_const"]
        state[f"{prefix}.gru_rel_pos_const"] = const[:, kept]

    def run_layers(self, layers, hidden_states):
        outputs, position_bias = [], None
        for layer in layers:
            hidden_states, position_bias = layer(hidden_states, position_bias=position_bias)
            outputs.append(hidden_states)
        return outputs


class Wav2Vec2Architecture(Architecture):
    """wav2vec 2.0 (and XLS-R): plain multi-head attention, convolutional positions."""

    name = model_type = "wav2vec2"
    label = "wav2vec 2.0"
    config_class, model_class = Wav2Vec2Config, Wav2Vec2Model
    stock_attention = modeling_wav2vec2.Wav2Vec2Attention
    pruned_attention_class = PrunedSelfAttention
    group_norm_conv = modeling_wav2vec2.Wav2Vec2GroupNormConvLayer
    layer_norm_conv = modeling_wav2vec2.Wav2Vec2LayerNormConvLayer
    no_norm_conv = modeling_wav2vec2.Wav2Vec2NoLayerNormConvLayer

    def check(self, config):
        if getattr(config, "adapter_attn_dim", None) is not None:
            raise ValueError(
                f"{self.name} config has adapter_attn_dim={config.adapter_attn_dim}: attention "
                "adapters (MMS) are not supported; expected adapter_attn_dim=None.")

    def pruned_attention(self, config, layer, kept_heads):
        return PrunedSelfAttention(config.hidden_size, config.num_attention_heads, kept_heads,
                                   dropout=config.attention_dropout)

    def removed_attention(self, config, layer):
        return PrunedSelfAttention(config.hidden_size, config.num_attention_heads, [],
                                   has_output=False)


class HubertArchitecture(Wav2Vec2Architecture):
    """HuBERT: wav2vec 2.0's modules, an optional feature-projection norm."""

    name = model_type = "hubert"
    label = "HuBERT"
    config_class, model_class = HubertConfig, HubertModel
    stock_attention = modeling_hubert.HubertAttention
    group_norm_conv = modeling_hubert.HubertGroupNormConvLayer
    layer_norm_conv = modeling_hubert.HubertLayerNormConvLayer
    no_norm_conv = modeling_hubert.HubertNoLayerNormConvLayer

    def projection_has_norm(self, config):
        return bool(config.feat_proj_layer_norm)


ARCHITECTURES: dict[str, Architecture] = {
    architecture.model_type: architecture
    for architecture in (WavLMArchitecture(), HubertArchitecture(), Wav2Vec2Architecture())
}


def architecture_of(config: PretrainedConfig | Mapping[str, Any]) -> Architecture:
    """The architecture of a transformers config (or config dict), by its model_type."""
    model_type = (config.get("model_type", "wavlm") if isinstance(config, Mapping)
                  else getattr(config, "model_type", None))
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type={model_type!r}: expected one of {sorted(ARCHITECTURES)} "
                         "(a WavLM, HuBERT or wav2vec 2.0 config).")
    return ARCHITECTURES[model_type]
