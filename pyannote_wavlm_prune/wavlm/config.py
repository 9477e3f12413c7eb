"""Resolving what a user passes as `wavlm=` into a WavLM config (and pretrained weights)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from transformers import PretrainedConfig, WavLMConfig, WavLMModel

# What the diarization front end changes in any WavLM config: layer drop and SpecAugment-style
# masking are training tricks of self-supervised pre-training that hurt fine-tuning here.
FRONT_END_OVERRIDES = {
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "add_adapter": False,
}


def _checked_config(config: PretrainedConfig | Mapping[str, Any], origin: str) -> WavLMConfig:
    """Return a WavLMConfig with the front-end overrides, or raise if `config` is not WavLM's."""
    if isinstance(config, Mapping):
        model_type = config.get("model_type", "wavlm")
        if model_type != "wavlm":
            raise ValueError(
                f"{origin} is a {model_type!r} config, expected a WavLM config (model_type 'wavlm')."
            )
        config = WavLMConfig.from_dict(dict(config))
    elif not isinstance(config, WavLMConfig):
        raise ValueError(
            f"{origin} is a {type(config).__name__} ({getattr(config, 'model_type', '?')!r}), "
            "expected a transformers.WavLMConfig."
        )
    else:
        config = WavLMConfig.from_dict(config.to_dict())
    for key, value in FRONT_END_OVERRIDES.items():
        setattr(config, key, value)
    return config


def resolve_wavlm(
    wavlm: str | os.PathLike | PretrainedConfig | Mapping[str, Any],
) -> tuple[WavLMConfig, dict[str, torch.Tensor] | None]:
    """Return the WavLM config and, when `wavlm` names pretrained weights, their state dict.

    Parameters
    ----------
    wavlm : str, path, WavLMConfig or dict
        A Hugging Face model name (e.g. "microsoft/wavlm-base-plus") or a local directory
        written by `save_pretrained`: config and weights are loaded. A WavLMConfig or a
        config dict: random initialisation.

    Raises
    ------
    ValueError
        When the config is not a WavLM config, or the name cannot be resolved (for example
        offline, with the weights not in the local cache).
    """
    if isinstance(wavlm, (PretrainedConfig, Mapping)):
        return _checked_config(wavlm, origin="wavlm"), None

    if not isinstance(wavlm, (str, os.PathLike)):
        raise ValueError(
            f"wavlm={wavlm!r} is a {type(wavlm).__name__}; expected a model name, a local "
            "directory, a transformers.WavLMConfig or a config dict."
        )

    name = os.fspath(wavlm)
    try:
        raw_config = PretrainedConfig.get_config_dict(name)[0]
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " The Hugging Face hub is disabled (HF_HUB_OFFLINE=1): pass a local directory "
            "written by `WavLMModel.save_pretrained` instead."
            if offline
            else " Check the name, your network, or pass a local directory."
        )
        raise ValueError(f"Could not load WavLM {name!r}: no such local directory or model.{hint}") from error

    config = _checked_config(raw_config, origin=f"wavlm={name!r}")
    pretrained = WavLMModel.from_pretrained(name, config=config)
    return config, pretrained.state_dict()


def conv_frames(config: WavLMConfig, num_samples: int) -> list[int]:
    """Output length of each CNN layer for `num_samples` input samples (0 once too short)."""
    frames, length = [], num_samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        length = (length - kernel) // stride + 1 if length >= kernel else 0
        frames.append(length)
    return frames
