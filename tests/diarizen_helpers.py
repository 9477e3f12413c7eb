"""DiariZen-format hub directories with random weights, and an independent reference forward.

Nothing here uses the importer: the state dict is laid out as DiariZen's modules name their
tensors (model_wavlm_conformer.Model: wavlm_model = torchaudio-style Wav2Vec2Model,
weight_sum, proj, lnorm, conformer.conformer_layer.{i}, classifier), and
`reference_forward` computes DiariZen's published architecture with plain torch functions
from that state dict.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pyannote_wavlm_prune.frontends.published import published_structure, structure_with_family

CONFIG_TOML = """\
[meta]
save_dir = "exp"
seed = 3407

[model]
path = "diarizen.models.eend.model_wavlm_conformer.Model"
[model.args]
wavlm_src = "{wavlm_src}"
wavlm_layer_num = {layer_num}
wavlm_feat_dim = {feat_dim}
attention_in = {dim}
ffn_hidden = {ffn}
num_head = {heads}
num_layer = {blocks}
kernel_size = {kernel}
dropout = 0.1
chunk_size = 8
use_posi = false
output_activate_function = false
selected_channel = 0
max_speakers_per_chunk = 4

[inference.args]
seg_duration = {seg_duration}
segmentation_step = {segmentation_step}
batch_size = 32
apply_median_filtering = true

[clustering.args]
method = "VBxClustering"
min_speakers = 1
max_speakers = 20
ahc_criterion = "distance"
ahc_threshold = 0.6
Fa = 0.07
Fb = 0.8
lda_dim = 128
max_iters = 20
"""

NUM_CLASSES = 11  # powerset of 4 speakers, at most 2 per frame
# DiariZen's Conformer back end, and a small one for training tests
BACKEND = {"dim": 256, "ffn": 1024, "heads": 4, "blocks": 4, "kernel": 31}
TINY_BACKEND = {"dim": 32, "ffn": 64, "heads": 2, "blocks": 1, "kernel": 7}

# a small Base-family WavLM (4 layers, 4 heads of 16, FFN 128, 7 x 32 channels)
TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
               "intermediate_size": 128, "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16,
               "num_conv_pos_embedding_groups": 4}
# pruned as DiariZen prunes: irregular channels, real head indices, a removed attention block
TINY_PRUNED = {"family": "base", "config": TINY_CONFIG,
               "conv_channels": [20, 24, 32, 12, 28, 16, 18],
               "kept_heads": [[1, 3], [0, 2, 3], [], [2]],
               "attention_layers": [True, True, False, True],
               "ffn_widths": [40, 100, 8, 64]}
TINY_UNPRUNED = {"family": "base", "config": TINY_CONFIG, "conv_channels": [32] * 7,
                 "kept_heads": [[0, 1, 2, 3]] * 4, "ffn_widths": [128] * 4}


def resolve(wavlm):
    """Config and validated structure of a published name or a structure description."""
    if isinstance(wavlm, str):
        config, structure = published_structure(wavlm)
    else:
        config, structure = structure_with_family(wavlm)
    return config, structure


def _linear(generator, rows: int, columns: int, bias: bool = True) -> dict[str, torch.Tensor]:
    weights = {"weight": torch.randn(rows, columns, generator=generator) / math.sqrt(columns)}
    if bias:
        weights["bias"] = 0.1 * torch.randn(rows, generator=generator)
    return weights


def _norm(generator, size: int) -> dict[str, torch.Tensor]:
    return {"weight": 1 + 0.2 * torch.randn(size, generator=generator),
            "bias": 0.1 * torch.randn(size, generator=generator)}


def diarizen_state_dict(wavlm, seed: int = 0, backend=BACKEND) -> dict[str, torch.Tensor]:
    """Random weights of DiariZen's model for `wavlm` (a published name or a description)

    Non-trivial where an import could go wrong: a per-channel dummy_weight, signed layer
    weights, random gru_rel_pos_const for every original head, random BatchNorm statistics,
    and the unused LayerNorms DiariZen stores (encoder's final one in Large, those of
    removed pre-LN attention blocks).
    """
    config, structure = resolve(wavlm)
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def put(prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        state.update({f"{prefix}.{name}": tensor for name, tensor in tensors.items()})

    large = config.feat_extract_norm == "layer"
    channels = structure.conv_channels
    previous = 1
    for index, (kept, kernel) in enumerate(zip(channels, config.conv_kernel, strict=True)):
        layer = f"wavlm_model.feature_extractor.conv_layers.{index}"
        state[f"{layer}.conv.weight"] = torch.randn(kept, previous, kernel, generator=g) / math.sqrt(
            previous * kernel)
        if large or index == 0:
            put(f"{layer}.layer_norm", _norm(g, kept))
        previous = kept
    state["wavlm_model.feature_extractor.dummy_weight"] = 0.3 + 1.2 * torch.rand(previous, generator=g)
    embed = config.hidden_size
    put("wavlm_model.encoder.feature_projection.layer_norm", _norm(g, previous))
    put("wavlm_model.encoder.feature_projection.projection", _linear(g, embed, previous))
    transformer = "wavlm_model.encoder.transformer"
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    state[f"{transformer}.pos_conv_embed.conv.bias"] = 0.1 * torch.randn(embed, generator=g)
    state[f"{transformer}.pos_conv_embed.conv.parametrizations.weight.original0"] = (
        0.5 + torch.rand(1, 1, kernel, generator=g))
    state[f"{transformer}.pos_conv_embed.conv.parametrizations.weight.original1"] = torch.randn(
        embed, embed // groups, kernel, generator=g)
    put(f"{transformer}.layer_norm", _norm(g, embed))
    heads, head_dim = config.num_attention_heads, embed // config.num_attention_heads
    for index in range(config.num_hidden_layers):
        layer = f"{transformer}.layers.{index}"
        kept_heads = structure.kept_heads[index]
        if structure.attention_layers[index]:
            width = len(kept_heads) * head_dim
            for name in ("k_proj", "v_proj", "q_proj"):
                put(f"{layer}.attention.{name}", _linear(g, width, embed))
            put(f"{layer}.attention.out_proj", _linear(g, embed, width))
            if index == 0:
                state[f"{layer}.attention.rel_attn_embed.weight"] = torch.randn(
                    config.num_buckets, heads, generator=g)
            put(f"{layer}.attention.gru_rel_pos_linear", _linear(g, 8, head_dim))
            state[f"{layer}.attention.gru_rel_pos_const"] = 0.5 + torch.rand(1, heads, 1, 1,
                                                                               generator=g)
        put(f"{layer}.layer_norm", _norm(g, embed))
        if structure.ffn_layers[index]:
            width = structure.ffn_widths[index]
            put(f"{layer}.feed_forward.intermediate_dense", _linear(g, width, embed))
            put(f"{layer}.feed_forward.output_dense", _linear(g, embed, width))
        put(f"{layer}.final_layer_norm", _norm(g, embed))

    num_states = config.num_hidden_layers + 1
    state["weight_sum.weight"] = torch.randn(1, num_states, generator=g) / math.sqrt(num_states)
    dim, ffn = backend["dim"], backend["ffn"]
    put("proj", _linear(g, dim, embed))
    put("lnorm", _norm(g, dim))
    for index in range(backend["blocks"]):
        block = f"conformer.conformer_layer.{index}"
        for name in ("ffn1", "ffn2"):
            put(f"{block}.{name}.ln_norm", _norm(g, dim))
            put(f"{block}.{name}.w_1", _linear(g, ffn, dim))
            put(f"{block}.{name}.w_2", _linear(g, dim, ffn))
        put(f"{block}.mha.ln_norm", _norm(g, dim))
        for name in ("linearQ", "linearK", "linearV", "linearO"):
            put(f"{block}.mha.mha.{name}", _linear(g, dim, dim))
        put(f"{block}.conv.ln_norm", _norm(g, dim))
        conv1 = _linear(g, 2 * dim, dim)
        put(f"{block}.conv.pointwise_conv1", {"weight": conv1["weight"][..., None],
                                              "bias": conv1["bias"]})
        state[f"{block}.conv.depthwise_conv.weight"] = torch.randn(
            dim, 1, backend["kernel"], generator=g) / math.sqrt(backend["kernel"])
        state[f"{block}.conv.depthwise_conv.bias"] = 0.1 * torch.randn(dim, generator=g)
        put(f"{block}.conv.bn_norm", _norm(g, dim))
        state[f"{block}.conv.bn_norm.running_mean"] = 0.2 * torch.randn(dim, generator=g)
        state[f"{block}.conv.bn_norm.running_var"] = 0.5 + torch.rand(dim, generator=g)
        state[f"{block}.conv.bn_norm.num_batches_tracked"] = torch.tensor(1234)
        conv2 = _linear(g, dim, dim)
        put(f"{block}.conv.pointwise_conv2", {"weight": conv2["weight"][..., None],
                                              "bias": conv2["bias"]})
        put(f"{block}.ln_norm", _norm(g, dim))
    put("classifier", _linear(g, NUM_CLASSES, dim))
    return state


def write_plda(directory: Path, dimension: int = 256, lda_dimension: int = 128,
               seed: int = 0) -> None:
    """Random but valid pyannote PLDA files (xvec_transform.npz, plda.npz)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    lda, _ = np.linalg.qr(rng.standard_normal((dimension, lda_dimension)))
    tr, _ = np.linalg.qr(rng.standard_normal((lda_dimension, lda_dimension)))
    np.savez(directory / "xvec_transform.npz", mean1=0.1 * rng.standard_normal(dimension),
             lda=lda, mean2=0.1 * rng.standard_normal(lda_dimension))
    np.savez(directory / "plda.npz", mu=0.1 * rng.standard_normal(lda_dimension), tr=tr,
             psi=np.sort(rng.uniform(0.5, 20.0, lda_dimension))[::-1].copy())


def write_hub(directory: Path, wavlm, seed: int = 0, backend=BACKEND,
              state: dict[str, torch.Tensor] | None = None, seg_duration: float = 16,
              segmentation_step: float = 0.1) -> dict[str, torch.Tensor]:
    """A DiariZen hub repository (pytorch_model.bin, config.toml, plda/); returns its state

    `wavlm`: a published name (config.toml's wavlm_src), or a structure description (then
    wavlm_src is "custom_wavlm" and the import needs `structure=`). The inference window
    and step default to DiariZen's (16 s, 0.1).
    """
    config, _ = resolve(wavlm)
    directory.mkdir(parents=True, exist_ok=True)
    state = diarizen_state_dict(wavlm, seed, backend) if state is None else state
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.toml").write_text(CONFIG_TOML.format(
        wavlm_src=wavlm if isinstance(wavlm, str) else "custom_wavlm",
        layer_num=config.num_hidden_layers + 1, feat_dim=config.hidden_size,
        seg_duration=seg_duration, segmentation_step=segmentation_step, **backend))
    write_plda(directory / "plda", seed=seed)
    return state


# ----------------------------------------------------------------------------- reference


def _relative_position_buckets(num_frames: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """WavLM's bidirectional log-spaced buckets of key - query offsets, shape (T, T)."""
    positions = torch.arange(num_frames)
    offsets = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    exact = half // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    logarithmic = exact + (torch.log(distance.float().clamp(min=1) / exact)
                           / math.log(max_distance / exact) * (half - exact)).long()
    logarithmic = logarithmic.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, logarithmic)


@torch.no_grad()
def reference_forward(state: dict[str, torch.Tensor], wavlm, waveforms: torch.Tensor,
                      backend=BACKEND) -> torch.Tensor:
    """Powerset probabilities of DiariZen's model, computed from its state dict

    waveforms (Tensor): shape (batch, samples), 16 kHz
    returns (Tensor): shape (batch, frames, classes), float64 (so is the whole computation)
    """
    config, structure = resolve(wavlm)
    s = {key: value.double() for key, value in state.items()}
    large = config.feat_extract_norm == "layer"

    def linear(x, prefix):
        return F.linear(x, s[f"{prefix}.weight"], s.get(f"{prefix}.bias"))

    def norm(x, prefix):
        return F.layer_norm(x, x.shape[-1:], s[f"{prefix}.weight"], s[f"{prefix}.bias"])

    x = waveforms.double()
    if large:
        x = F.layer_norm(x, x.shape[-1:])
    x = x[:, None]
    for index, stride in enumerate(config.conv_stride):
        layer = f"wavlm_model.feature_extractor.conv_layers.{index}"
        x = F.conv1d(x, s[f"{layer}.conv.weight"], stride=stride)
        if large:
            x = norm(x.transpose(1, 2), f"{layer}.layer_norm").transpose(1, 2)
        elif index == 0:
            x = F.group_norm(x, x.shape[1], s[f"{layer}.layer_norm.weight"],
                             s[f"{layer}.layer_norm.bias"])
        x = F.gelu(x)
    x = x.transpose(1, 2) * s["wavlm_model.feature_extractor.dummy_weight"]
    x = linear(norm(x, "wavlm_model.encoder.feature_projection.layer_norm"),
               "wavlm_model.encoder.feature_projection.projection")

    transformer = "wavlm_model.encoder.transformer"
    g = s[f"{transformer}.pos_conv_embed.conv.parametrizations.weight.original0"]
    v = s[f"{transformer}.pos_conv_embed.conv.parametrizations.weight.original1"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)
    kernel = weight.shape[-1]
    positional = F.conv1d(x.transpose(1, 2), weight, s[f"{transformer}.pos_conv_embed.conv.bias"],
                          padding=kernel // 2, groups=config.num_conv_pos_embedding_groups)
    x = x + F.gelu(positional[..., :-1] if kernel % 2 == 0 else positional).transpose(1, 2)
    if not large:  # post-LN: the encoder's norm before the first layer
        x = norm(x, f"{transformer}.layer_norm")
    hidden_states = [x]

    batch, frames, embed = x.shape
    heads = config.num_attention_heads
    head_dim = embed // heads
    buckets = _relative_position_buckets(frames, config.num_buckets, config.max_bucket_distance)
    position_bias = s[f"{transformer}.layers.0.attention.rel_attn_embed.weight"][buckets]
    position_bias = position_bias.permute(2, 0, 1)  # (H, T, T)
    for index in range(config.num_hidden_layers):
        layer = f"{transformer}.layers.{index}"
        if structure.attention_layers[index]:
            kept = structure.kept_heads[index]
            residual = x
            h = norm(x, f"{layer}.layer_norm") if large else x
            chunks = h.view(batch, frames, heads, head_dim).transpose(1, 2)  # (B, H, T, d)
            gates = linear(chunks, f"{layer}.attention.gru_rel_pos_linear")
            gates = torch.sigmoid(gates.view(batch, heads, frames, 2, 4).sum(-1))
            gate_a, gate_b = gates[..., :1], gates[..., 1:]
            const = s[f"{layer}.attention.gru_rel_pos_const"]
            bias = (gate_a * (gate_b * const - 1.0) + 2.0) * position_bias  # (B, H, T, T)
            bias = bias[:, kept]

            def split(projection, h=h, layer=layer, kept=kept):
                return linear(h, f"{layer}.attention.{projection}").view(
                    batch, frames, len(kept), head_dim).transpose(1, 2)

            scores = split("q_proj") @ split("k_proj").transpose(-1, -2) / math.sqrt(head_dim)
            context = torch.softmax(scores + bias, dim=-1) @ split("v_proj")
            context = context.transpose(1, 2).reshape(batch, frames, len(kept) * head_dim)
            x = residual + linear(context, f"{layer}.attention.out_proj")

        def feed_forward(y, layer=layer):
            y = F.gelu(linear(y, f"{layer}.feed_forward.intermediate_dense"))
            return linear(y, f"{layer}.feed_forward.output_dense")

        if large:
            if structure.ffn_layers[index]:
                x = x + feed_forward(norm(x, f"{layer}.final_layer_norm"))
        else:
            x = norm(x, f"{layer}.layer_norm")
            if structure.ffn_layers[index]:
                x = x + feed_forward(x)
            x = norm(x, f"{layer}.final_layer_norm")
        hidden_states.append(x)

    layer_weights = s["weight_sum.weight"][0]
    x = sum(w * h for w, h in zip(layer_weights, hidden_states, strict=True))
    x = norm(linear(x, "proj"), "lnorm")

    num_heads = backend["heads"]
    for index in range(backend["blocks"]):
        block = f"conformer.conformer_layer.{index}"

        def half_ffn(y, name, block=block):
            z = F.silu(linear(norm(y, f"{block}.{name}.ln_norm"), f"{block}.{name}.w_1"))
            return y + 0.5 * linear(z, f"{block}.{name}.w_2")

        x = half_ffn(x, "ffn1")
        y = norm(x, f"{block}.mha.ln_norm")
        dim = y.shape[-1]

        def split_heads(name, y=y, block=block, dim=dim):
            return linear(y, f"{block}.mha.mha.{name}").view(
                batch, frames, num_heads, dim // num_heads).transpose(1, 2)

        scores = split_heads("linearQ") @ split_heads("linearK").transpose(-1, -2)
        context = torch.softmax(scores / math.sqrt(dim // num_heads), dim=-1) @ split_heads("linearV")
        x = x + linear(context.transpose(1, 2).reshape(batch, frames, dim), f"{block}.mha.mha.linearO")
        y = norm(x, f"{block}.conv.ln_norm").transpose(1, 2)
        y = F.glu(F.conv1d(y, s[f"{block}.conv.pointwise_conv1.weight"],
                           s[f"{block}.conv.pointwise_conv1.bias"]), dim=1)
        y = F.conv1d(y, s[f"{block}.conv.depthwise_conv.weight"],
                     s[f"{block}.conv.depthwise_conv.bias"],
                     padding=backend["kernel"] // 2, groups=dim)
        y = F.batch_norm(y, s[f"{block}.conv.bn_norm.running_mean"],
                         s[f"{block}.conv.bn_norm.running_var"], s[f"{block}.conv.bn_norm.weight"],
                         s[f"{block}.conv.bn_norm.bias"], training=False)
        y = F.conv1d(F.silu(y), s[f"{block}.conv.pointwise_conv2.weight"],
                     s[f"{block}.conv.pointwise_conv2.bias"])
        x = x + y.transpose(1, 2)
        x = norm(half_ffn(x, "ffn2"), f"{block}.ln_norm")
    return torch.softmax(linear(x, "classifier"), dim=-1)
