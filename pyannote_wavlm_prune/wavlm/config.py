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


def _checked_config(config: PretrainedConfig | Mapping[str, Any], origin: str) -> PretrainedConfig:
    """The config (a copy) with the front-end overrides, or a ValueError if no family takes it."""
    if isinstance(config, Mapping):
        model_type = config.get("model_type", "wavlm")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"{origin} is a {model_type!r} config, expected {EXPECTED}.")
        config = ARCHITECTURES[model_type].config_class.from_dict(dict(config))
    else:
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
