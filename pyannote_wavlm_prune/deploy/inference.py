"""What an inference model can pay once at load instead of on every call.

WavLM's positional convolution is weight-normalised (transformers registers
`torch.nn.utils.parametrizations.weight_norm` on `encoder.pos_conv_embed.conv`): in eval mode
the weight `g * v / ||v||` is recomputed on every forward call although it never changes.
`optimize_for_inference(model)` folds it into a plain weight, in place, while the model's
state dict keeps the keys of a weight-normalised model (g and v are recomputed from the
folded weight when saving, and folded again when loading), so that checkpoints written from
an optimised model reload in an unoptimised one and the other way round.

Training an optimised model trains the folded weight (no weight normalisation): use it for
inference only.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

# state-dict names of weight_norm's magnitude g and direction v (torch parametrizations)
MAGNITUDE = "parametrizations.weight.original0"
DIRECTION = "parametrizations.weight.original1"


def _norm_except(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm of `weight` over every dimension but `dim`, keeping dimensions (g's shape)."""
    others = [index for index in range(weight.dim()) if index != dim]
    return weight.norm(dim=others, keepdim=True)


def weight_normed_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module whose `weight` carries a weight_norm parametrization."""
    for name, module in model.named_modules():
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is None or "weight" not in parametrizations:
            continue
        if any(type(p).__name__ == "_WeightNorm" for p in parametrizations.weight):
            yield name, module


def fold_weight_norm(module: nn.Module) -> None:
    """Replace `module`'s weight_norm parametrization by its current weight, in place,
    keeping the state-dict format of weight_norm (g and v)

    Parameters
    ----------
    module : nn.Module
        A module with `torch.nn.utils.parametrizations.weight_norm` on `weight`, e.g. WavLM's
        positional convolution: weight (out_channels, in_channels / groups, kernel), g of
        shape (1, 1, kernel) for transformers' dim=2.
    """
    parametrization = next(p for p in module.parametrizations.weight
                           if type(p).__name__ == "_WeightNorm")
    dim = parametrization.dim
    if len(module.parametrizations) != 1 or len(module.parametrizations.weight) != 1:
        raise ValueError(
            f"{type(module).__name__} has parametrizations {list(module.parametrizations)} of "
            "weight: expected weight_norm alone."
        )
    weight = nn.Parameter(module.weight.detach().clone(),
                          requires_grad=module.parametrizations.weight.original0.requires_grad)
    # not parametrize.remove_parametrizations: the parametrized class is shared by deep
    # copies (torch 2.11), and removing the property from it would break every copy. The
    # class is set back as remove_parametrizations does: torch's parametrizations are a
    # subclass it injects, and this undoes exactly that, leaving the module a plain Conv1d.
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]
    module.weight = weight

    def save_as_weight_norm(module, state_dict, prefix, local_metadata):
        weight = state_dict.pop(prefix + "weight")
        # g = ||v|| (all dimensions but `dim`) and v = weight: g * v / ||v|| == weight
        state_dict[prefix + MAGNITUDE] = _norm_except(weight, dim)
        state_dict[prefix + DIRECTION] = weight
        return state_dict

    def load_from_weight_norm(module, state_dict, prefix, *args):
        if prefix + MAGNITUDE in state_dict and prefix + DIRECTION in state_dict:
            magnitude = state_dict.pop(prefix + MAGNITUDE)
            direction = state_dict.pop(prefix + DIRECTION)
            state_dict[prefix + "weight"] = torch._weight_norm(direction, magnitude, dim)

    module._register_state_dict_hook(save_as_weight_norm)
    module.register_load_state_dict_pre_hook(load_from_weight_norm)


@torch.no_grad()
def optimize_for_inference(model: nn.Module) -> nn.Module:
    """`model`, in place and in eval mode, without per-call work that can be paid once

    Folds every weight_norm parametrization (WavLM's positional convolution) into a plain
    weight; state dicts keep their keys (see `fold_weight_norm`). Idempotent.

    Parameters
    ----------
    model : nn.Module
        Typically a WavLMSegmentation (pruned or not) or a WavLM front end.

    Returns
    -------
    model : nn.Module
        The same object, in eval mode.
    """
    for _, module in list(weight_normed_modules(model)):
        fold_weight_norm(module)
    return model.eval()


def is_optimized_for_inference(model: nn.Module) -> bool:
    """Whether `model` has no weight_norm parametrization left to fold."""
    return next(weight_normed_modules(model), None) is None
