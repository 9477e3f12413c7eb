"""Hard-concrete gates on the stock transformers modules of a WavLM front end.

Nothing of transformers is forked: gates act through forward hooks (CNN layers, FFN and
attention blocks) and a parametrization of each `out_proj.weight` (heads; stock attention
reads the weight directly, and masking the input columns of a head equals masking its
context vector). The gates live in `frontend.gates` (so in its parameters and state dict):

    frontend.gates["conv"][l]             C_l channels of CNN layer l
    frontend.gates["head"][j]             H heads of layer j
    frontend.gates["ffn"][j]              F intermediate units of layer j
    frontend.gates["attention_layer"][j]  1, the whole attention block of layer j
    frontend.gates["ffn_layer"][j]        1, the whole FFN block of layer j

Each front-end forward pass draws every mask once (a pre-forward hook), and every hook of
that pass reads it, so all time steps and batch elements share one sample (see GateMasks).

Where the CNN channel gates act (z: the channel's gate value)
--------------------------------------------------------------
METHOD.md places z after conv > norm > GELU. We place it so that pruning is exact and each
folding stays inside the layer that owns the channel:

- no-norm layer (Base, layers 1-6):  conv > z > GELU. z scales the conv's output rows;
  a closed channel is GELU(0) = 0.
- GroupNorm layer (Base, layer 0):   conv > GN > z > GELU. GN is per channel, so z scales
  its affine parameters.
- LayerNorm layer (Large):           conv > z > LN > (z > 0) > GELU. A closed channel is
  exactly 0 before the norm, so the pruned layer computes the norm over the kept channels
  with the original channel count and matches; the hard mask after the norm makes the
  closed channel's output exactly 0 (its LN output, b - mean / std * w, would not be).

After GELU (METHOD's place), a soft z of the last CNN layer could not be folded into the
feature projection's LayerNorm, and pruned channels of a LayerNorm layer would still count
in that layer's statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.models.wavlm.modeling_wavlm import (
    WavLMAttention,
    WavLMGroupNormConvLayer,
    WavLMLayerNormConvLayer,
    WavLMNoLayerNormConvLayer,
)

from .gates import HardConcreteGate

UNITS = ("conv", "head", "ffn", "attention_layer", "ffn_layer")
DEFAULT_UNITS = ("conv", "head", "ffn")
# p of log_alpha ~ N(log((1 - p) / p), 0.01^2), METHOD.md section 2
INIT_DROP_RATES = {"conv": 0.01, "head": 0.01, "ffn": 0.5, "attention_layer": 0.01,
                   "ffn_layer": 0.01}


class GateMasks:
    """The masks of the last forward pass, shared by all gate hooks of one front end

    Masks persist until the next front-end forward pass draws new ones, so that a recomputed
    forward (gradient checkpointing) sees the same sample. A submodule called on its own
    reuses them too, unless the gates changed mode (train / eval) since: then it draws.
    """

    def __init__(self, gates: nn.ModuleDict):
        self.gates = gates
        self.current: dict[tuple[str, int], torch.Tensor] = {}
        self.drawn_in_training: bool | None = None

    def draw(self) -> None:
        self.current = {
            (unit, index): gate() for unit, group in self.gates.items()
            for index, gate in enumerate(group)
        }
        self.drawn_in_training = self.gates.training

    def __getstate__(self) -> dict:
        # copies (deepcopy, pickle) start without masks: sampled ones are not graph leaves
        return {**self.__dict__, "current": {}, "drawn_in_training": None}

    def get(self, unit: str, index: int) -> torch.Tensor:
        """Mask of gate group (unit, index), shape (num_units,)"""
        if self.drawn_in_training != self.gates.training:
            self.draw()
        return self.current[(unit, index)]


class _GateHook:
    """Base of every hook this module registers (so that they can be found and removed)."""

    def __init__(self, masks: GateMasks, unit: str = "", index: int = 0):
        self.masks = masks
        self.unit = unit
        self.index = index


class _DrawMasks(_GateHook):
    def __call__(self, module, args):
        self.masks.draw()


class _MaskChannels(_GateHook):
    """Forward hook: output * z over the channel dimension (1 or -1); hard: output * (z > 0)."""

    def __init__(self, masks: GateMasks, unit: str, index: int, dim: int, hard: bool = False):
        super().__init__(masks, unit, index)
        self.dim = dim
        self.hard = hard

    def __call__(self, module, args, output: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(self.unit, self.index)
        mask = (mask > 0).to(output.dtype) if self.hard else mask.to(output.dtype)
        if self.dim == 1:
            mask = mask[:, None]  # (batch, channels, frames)
        return output * mask


class _MaskInput(_GateHook):
    """Forward pre-hook: input * z over the last dimension (FFN units before output_dense)."""

    def __call__(self, module, args):
        (hidden_states,) = args
        return (hidden_states * self.masks.get(self.unit, self.index).to(hidden_states.dtype),)


class _ScaleBlock(_GateHook):
    """Forward hook: a whole block's output * z (z has one unit)."""

    def __call__(self, module, args, output):
        scale = self.masks.get(self.unit, self.index)
        if isinstance(output, tuple):
            # WavLMAttention returns (output, weights, position_bias)
            return (output[0] * scale.to(output[0].dtype),) + tuple(output[1:])
        return output * scale.to(output.dtype)


class HeadMask(nn.Module):
    """Parametrization of out_proj.weight: input columns of head h multiplied by z_h

    weight (Tensor): shape (embed_dim, num_heads * head_dim)
    """

    def __init__(self, masks: GateMasks, index: int, head_dim: int):
        super().__init__()
        self.masks = masks
        self.index = index
        self.head_dim = head_dim

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get("head", self.index).to(weight.dtype)
        return weight * mask.repeat_interleave(self.head_dim)[None, :]


def is_gated(frontend: nn.Module) -> bool:
    """Whether `frontend` carries hard-concrete gates."""
    return isinstance(getattr(frontend, "gates", None), nn.ModuleDict)


def gate_units(frontend: nn.Module) -> tuple[str, ...]:
    """Units gated in `frontend` (empty if none), in the order of UNITS."""
    if not is_gated(frontend):
        return ()
    return tuple(unit for unit in UNITS if unit in frontend.gates)


def _check_units(units: str | Iterable[str]) -> tuple[str, ...]:
    units = (units,) if isinstance(units, str) else tuple(units)
    unknown = [unit for unit in units if unit not in UNITS]
    if unknown:
        raise ValueError(f"Unknown gate units {unknown}: expected some of {list(UNITS)}.")
    if not units:
        raise ValueError(f"units is empty: expected some of {list(UNITS)}.")
    return tuple(unit for unit in UNITS if unit in units)


def attach_frontend_gates(
    frontend: nn.Module,
    units: str | Iterable[str] = DEFAULT_UNITS,
    init_drop_rates: Mapping[str, float] | None = None,
) -> nn.ModuleDict:
    """Attach hard-concrete gates to an unpruned WavLM front end, in place; return them

    Parameters
    ----------
    frontend : WavLMFrontEnd
        Unpruned (stock transformers modules) and not gated yet.
    units : str or iterable of str, optional
        Among "conv", "head", "ffn", "attention_layer", "ffn_layer".
        Defaults to ("conv", "head", "ffn").
    init_drop_rates : dict, optional
        Per unit, p of the gates' initialisation (see HardConcreteGate). Defaults to
        METHOD.md's: 0.5 for "ffn", 0.01 for the others.

    Raises
    ------
    ValueError
        For an unknown unit, a front end already gated, or a pruned front end.
    """
    units = _check_units(units)
    drop_rates = dict(INIT_DROP_RATES)
    if init_drop_rates is not None:
        unknown = sorted(set(init_drop_rates) - set(UNITS))
        if unknown:
            raise ValueError(f"init_drop_rates has unknown units {unknown}: expected some of "
                             f"{list(UNITS)}.")
        drop_rates.update(init_drop_rates)
    if is_gated(frontend):
        raise ValueError(
            f"The front end already carries gates on {list(gate_units(frontend))}: "
            "remove_frontend_gates() it first."
        )
    if getattr(frontend, "structure", None) is not None:
        raise ValueError(
            "The front end is pruned (it has a structure): gates attach to the unpruned "
            "architecture. Gate the unpruned model, then prune it once."
        )
    wavlm = frontend.wavlm
    config = frontend.config
    conv_layers = wavlm.feature_extractor.conv_layers
    layers = wavlm.encoder.layers
    if not all(isinstance(layer.attention, WavLMAttention) for layer in layers):
        raise ValueError("The front end's attention modules are not transformers' WavLMAttention: "
                         "gates attach to the unpruned architecture only.")

    device = next(frontend.parameters()).device
    sizes = {
        "conv": [layer.conv.out_channels for layer in conv_layers],
        "head": [config.num_attention_heads] * len(layers),
        "ffn": [layer.feed_forward.intermediate_dense.out_features for layer in layers],
        "attention_layer": [1] * len(layers),
        "ffn_layer": [1] * len(layers),
    }
    gates = nn.ModuleDict({
        unit: nn.ModuleList(
            HardConcreteGate(size, init_drop_rate=drop_rates[unit]) for size in sizes[unit]
        )
        for unit in units
    }).to(device)
    gates.train(frontend.training)  # new modules start in train mode, whatever the front end's
    frontend.gates = gates
    masks = GateMasks(gates)
    frontend._gate_masks = masks

    if "conv" in units:
        for index, layer in enumerate(conv_layers):
            if isinstance(layer, WavLMGroupNormConvLayer):
                layer.layer_norm.register_forward_hook(_MaskChannels(masks, "conv", index, dim=1))
            elif isinstance(layer, WavLMLayerNormConvLayer):
                layer.conv.register_forward_hook(_MaskChannels(masks, "conv", index, dim=1))
                # LayerNorm output is (batch, frames, channels)
                layer.layer_norm.register_forward_hook(
                    _MaskChannels(masks, "conv", index, dim=-1, hard=True)
                )
            elif isinstance(layer, WavLMNoLayerNormConvLayer):
                layer.conv.register_forward_hook(_MaskChannels(masks, "conv", index, dim=1))
            else:
                raise ValueError(f"CNN layer {index} is a {type(layer).__name__}: expected one "
                                 "of transformers' WavLM conv layers.")
    head_dim = config.hidden_size // config.num_attention_heads
    for index, layer in enumerate(layers):
        if "head" in units:
            parametrize.register_parametrization(
                layer.attention.out_proj, "weight", HeadMask(masks, index, head_dim)
            )
        if "ffn" in units:
            layer.feed_forward.output_dense.register_forward_pre_hook(
                _MaskInput(masks, "ffn", index)
            )
        if "attention_layer" in units:
            layer.attention.register_forward_hook(_ScaleBlock(masks, "attention_layer", index))
        if "ffn_layer" in units:
            layer.feed_forward.register_forward_hook(_ScaleBlock(masks, "ffn_layer", index))

    frontend.register_forward_pre_hook(_DrawMasks(masks))
    return gates


def remove_frontend_gates(frontend: nn.Module) -> None:
    """Remove the gates, hooks and parametrizations of `attach_frontend_gates`, in place

    The weights are left as they are (unmasked): the front end is the ungated network again.
    """
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates.")
    for module in list(frontend.modules()):
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [key for key, hook in hooks.items() if isinstance(hook, _GateHook)]:
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, HeadMask) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    del frontend.gates
    del frontend._gate_masks


@torch.no_grad()
def deterministic_masks(frontend: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Eval-mode masks of every gate group, whatever the front end's mode

    returns: {unit: [mask (Tensor) of shape (num_units,) per layer]}
    """
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates: attach_frontend_gates() first.")
    return {
        unit: [gate.deterministic_mask().detach() for gate in group]
        for unit, group in frontend.gates.items()
    }
