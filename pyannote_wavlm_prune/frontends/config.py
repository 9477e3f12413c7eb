"""Resolving what a user passes as `wavlm=` into a front-end config (and pretrained weights).

Any family of `architectures.ARCHITECTURES` is accepted: a WavLM, HuBERT or wav2vec 2.0
model name, `save_pretrained` directory, config or config dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from transformers import PretrainedConfig

from .architectures import ARCHITECTURES, architecture_of

# What the diarization front end changes in any config: layer drop and SpecAugment-style
# masking are training tricks of self-supervised pre-training that hurt fine-tuning here.
FRONT_END_OVERRIDES = {
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "add_adapter": False,
}
EXPECTED = ("a WavLM, HuBERT or wav2vec 2.0 config (model_type "
            + ", ".join(repr(name) for name in ARCHITECTURES) + ")")


# WavLM Large's parameters (the largest family DiariZen and Microsoft publish): 315 M. A
# config asking for more than `SIZE_LIMIT` times as many is refused before anything is
# allocated: a checkpoint's hyper-parameters are data, and 64 layers of width 8192 would
# allocate until memory runs out.
LARGEST_PUBLISHED_PARAMS = 315_000_000
SIZE_LIMIT = 4


def estimated_params(config: Mapping[str, Any]) -> int:
    """About how many parameters a front end of `config` (a config dict) holds: its CNN,
    feature projection, positional convolution and transformer layers (norms and biases
    left out), computed from the sizes alone."""
    def size(key: str, default: Any) -> Any:
        value = config.get(key, default)
        return value if value is not None else default

    channels = [1, *size("conv_dim", (512,) * 7)]
    kernels = size("conv_kernel", (10, 3, 3, 3, 3, 2, 2))
    hidden, ffn = size("hidden_size", 768), size("intermediate_size", 3072)
    groups = max(1, size("num_conv_pos_embedding_groups", 16))
    cnn = sum(int(c_in) * int(c_out) * int(k)
              for c_in, c_out, k in zip(channels, channels[1:], kernels))
    layer = 4 * hidden * hidden + 2 * hidden * ffn
    positional = hidden * (hidden // groups) * size("num_conv_pos_embeddings", 128)
    return int(cnn + channels[-1] * hidden + positional
               + size("num_hidden_layers", 12) * layer)


def check_front_end_size(config: Mapping[str, Any], origin: str) -> None:
    """Raise a ValueError, before any allocation, for sizes that are not positive integers or
    add up to more than `SIZE_LIMIT` times WavLM Large's parameters."""
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{origin} has {key}={value!r}: expected a positive integer.")
    for key in ("conv_dim", "conv_kernel", "conv_stride"):
        values = config.get(key)
        if values is not None and (not isinstance(values, (list, tuple)) or not values or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values)):
            raise ValueError(f"{origin} has {key}={values!r}: expected a list of positive "
                             "integers.")
    params = estimated_params(config)
    if params > SIZE_LIMIT * LARGEST_PUBLISHED_PARAMS:
        raise ValueError(
            f"{origin} asks for a front end of about {params / 1e6:,.0f} M parameters "
            f"({config.get('num_hidden_layers')} layers of width {config.get('hidden_size')}, "
            f"FFN {config.get('intermediate_size')}): more than {SIZE_LIMIT} times WavLM "
            f"Large's {LARGEST_PUBLISHED_PARAMS / 1e6:.0f} M, the largest published family. "
            "Refused before allocating it: expected a config of a published size (WavLM, "
            "HuBERT or wav2vec 2.0 Base or Large, or smaller).")


def _checked_config(config: PretrainedConfig | Mapping[str, Any], origin: str) -> PretrainedConfig:
    """The config (a copy) with the front-end overrides, or a ValueError if no family takes it."""
    if isinstance(config, Mapping):
        model_type = config.get("model_type", "wavlm")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"{origin} is a {model_type!r} config, expected {EXPECTED}.")
        check_front_end_size(config, origin)
        config = ARCHITECTURES[model_type].config_class.from_dict(dict(config))
    else:
        check_front_end_size(config.to_dict(), origin)
        architecture = ARCHITECTURES.get(getattr(config, "model_type", None))
        if architecture is None or not isinstance(config, architecture.config_class):
            raise ValueError(
                f"{origin} is a {type(config).__name__} ({getattr(config, 'model_type', '?')!r}), "
                f"expected {EXPECTED}."
            )
        config = type(config).from_dict(config.to_dict())
    for key, value in FRONT_END_OVERRIDES.items():
        setattr(config, key, value)
    architecture_of(config).check(config)
    return config


def resolve_wavlm(
    wavlm: str | os.PathLike | PretrainedConfig | Mapping[str, Any],
) -> tuple[PretrainedConfig, dict[str, torch.Tensor] | None]:
    """Return the front end's config and, when `wavlm` names pretrained weights, their state dict.

    Parameters
    ----------
    wavlm : str, path, config or dict
        A Hugging Face model name (e.g. "microsoft/wavlm-base-plus",
        "facebook/hubert-base-ls960", "facebook/wav2vec2-base") or a local directory written
        by `save_pretrained`: config and weights are loaded. A `WavLMConfig`, `HubertConfig`,
        `Wav2Vec2Config` or a config dict (its "model_type" says which; "wavlm" if absent):
        random initialisation.

    Raises
    ------
    ValueError
        When the config is of no supported family, or the name cannot be resolved (for
        example offline, with the weights not in the local cache).
    """
    if isinstance(wavlm, (PretrainedConfig, Mapping)):
        return _checked_config(wavlm, origin="wavlm"), None

    if not isinstance(wavlm, (str, os.PathLike)):
        raise ValueError(
            f"wavlm={wavlm!r} is a {type(wavlm).__name__}; expected a model name, a local "
            "directory, a transformers config (WavLM, HuBERT, wav2vec 2.0) or a config dict."
        )

    name = os.fspath(wavlm)
    try:
        raw_config = PretrainedConfig.get_config_dict(name)[0]
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " The Hugging Face hub is disabled (HF_HUB_OFFLINE=1): pass a local directory "
            "written by `save_pretrained` instead."
            if offline
            else " Check the name, your network, or pass a local directory."
        )
        raise ValueError(f"Could not load {name!r}: no such local directory or model.{hint}") from error

    config = _checked_config(raw_config, origin=f"wavlm={name!r}")
    pretrained = architecture_of(config).model_class.from_pretrained(name, config=config)
    return config, pretrained.state_dict()


def conv_frames(config: PretrainedConfig, num_samples: int) -> list[int]:
    """Output length of each CNN layer for `num_samples` input samples (0 once too short)."""
    frames, length = [], num_samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        length = (length - kernel) // stride + 1 if length >= kernel else 0
        frames.append(length)
    return frames
