"""Hard-concrete gates on the stock transformers modules of a front end (WavLM, HuBERT, ...).

Nothing of transformers is forked: each unit kind (`units/`) attaches its gates through
forward hooks or a parametrization of a stock module. The gates live in `frontend.gates`
(so in its parameters and state dict), one group per layer:

    frontend.gates["conv"][l]             C_l channels of CNN layer l
    frontend.gates["head"][j]             H heads of layer j
    frontend.gates["ffn"][j]              F intermediate units of layer j
    frontend.gates["attention_layer"][j]  1, the whole attention block of layer j
    frontend.gates["ffn_layer"][j]        1, the whole FFN block of layer j

A pruned front end (one with a `structure`) is gated the same way, with one gate per unit it
kept (a layer that kept no unit has an empty group): pruning it again gives a smaller
structure, in original indices, relative to the same original config.

Each front-end forward pass draws every mask once (a pre-forward hook), and every hook of
that pass reads it, so all time steps and batch elements share one sample (see GateMasks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .architectures import architecture_of
from .gates import HardConcreteGate
from .masks import DrawMasks, GateHook, GateMasks, GateParametrization
from .structure import Structure
from .units import DEFAULT_UNITS, UNIT_KINDS, UNITS, within_blocks


def frontend_structure(frontend: nn.Module) -> Structure:
    """The structure of a front end's modules (its `structure`, or the full architecture)."""
    structure = getattr(frontend, "structure", None)
    return structure if structure is not None else Structure.full(frontend.config)


def frontend_options(frontend: nn.Module) -> dict[str, str]:
    """The front-end options unit kinds act by (`UnitKind.attach` / `fold` keywords)."""
    return {"pruned_norms": getattr(frontend, "pruned_norms", "original")}


def is_gated(frontend: nn.Module) -> bool:
    """Whether `frontend` carries hard-concrete gates."""
    return isinstance(getattr(frontend, "gates", None), nn.ModuleDict)


def gate_units(frontend: nn.Module) -> tuple[str, ...]:
    """Units gated in `frontend` (empty if none), in the order of UNITS."""
    if not is_gated(frontend):
        return ()
    return tuple(unit for unit in UNITS if unit in frontend.gates)


def check_units(units: str | Iterable[str]) -> tuple[str, ...]:
    """`units` as a tuple in the order of UNITS, or a ValueError naming the unknown ones."""
    units = (units,) if isinstance(units, str) else tuple(units)
    unknown = [unit for unit in units if unit not in UNITS]
    if unknown or not units:
        raise ValueError(f"Unknown units={unknown}: expected some of {list(UNITS)}.")
    return tuple(unit for unit in UNITS if unit in units)


def attach_frontend_gates(
    frontend: nn.Module,
    units: str | Iterable[str] = DEFAULT_UNITS,
    init_drop_rates: Mapping[str, float] | None = None,
) -> nn.ModuleDict:
    """Attach hard-concrete gates to a WavLM front end, in place; return them

    Parameters
    ----------
    frontend : WavLMFrontEnd
        Not gated yet. Unpruned (stock transformers modules), or pruned (it has a
        `structure`): then each group gates the units of its layer that the structure kept.
    units : str or iterable of str, optional
        Unit kinds among `UNITS` (the registry `units.UNIT_KINDS`). Defaults to
        `DEFAULT_UNITS`.
    init_drop_rates : dict, optional
        Per unit, p of the gates' initialisation (see HardConcreteGate). Defaults to each
        unit kind's (the papers': 0.5 for "ffn", 0.01 for the others; see
        docs/method.md#hard-concrete-gates).

    Raises
    ------
    ValueError
        For an unknown unit, or a front end already gated.
    """
    units = check_units(units)
    drop_rates = {unit: kind.init_drop_rate for unit, kind in UNIT_KINDS.items()}
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
    wavlm, structure = frontend.wavlm, frontend_structure(frontend)
    architecture = architecture_of(frontend.config)
    attention = (architecture.stock_attention if getattr(frontend, "structure", None) is None
                 else architecture.pruned_attention_class)
    if not all(isinstance(layer.attention, attention) for layer in wavlm.encoder.layers):
        raise ValueError(f"The front end's attention modules are not {attention.__name__}s: "
                         "gates attach to a WavLMFrontEnd's own modules only.")

    device = next(frontend.parameters()).device
    gates = nn.ModuleDict({
        unit: nn.ModuleList(
            HardConcreteGate(size, init_drop_rate=drop_rates[unit],
                             min_units=min(UNIT_KINDS[unit].min_kept, size))
            for size in UNIT_KINDS[unit].group_sizes(structure)
        )
        for unit in units
    }).to(device)
    gates.train(frontend.training)  # new modules start in train mode, whatever the front end's
    frontend.gates = gates
    masks = GateMasks(gates)
    frontend._gate_masks = masks
    for unit in units:
        UNIT_KINDS[unit].attach(wavlm, masks, structure, **frontend_options(frontend))
    frontend.register_forward_pre_hook(DrawMasks(masks))
    return gates


def remove_frontend_gates(frontend: nn.Module) -> None:
    """Remove the gates, hooks and parametrizations of `attach_frontend_gates`, in place

    The weights are left as they are (unmasked): the front end is the ungated network again.
    """
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates.")
    for module in list(frontend.modules()):
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [key for key, hook in hooks.items() if isinstance(hook, GateHook)]:
                del hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                module._forward_hooks_always_called.pop(key, None)
                module._forward_pre_hooks_with_kwargs.pop(key, None)
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, GateParametrization) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    del frontend.gates
    del frontend._gate_masks


@torch.no_grad()
def deterministic_masks(frontend: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Eval-mode masks of every unit kind, whatever the front end's mode (ones where ungated)

    returns: {unit: [mask (Tensor) of shape (num_units,) per layer]}
    """
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates: attach_frontend_gates() first.")
    device = next(iter(frontend.gates.parameters())).device
    masks = {}
    for unit, kind in UNIT_KINDS.items():
        if unit in frontend.gates:
            masks[unit] = [gate.deterministic_mask().detach() for gate in frontend.gates[unit]]
        else:
            masks[unit] = [torch.ones(size, device=device)
                           for size in kind.group_sizes(frontend_structure(frontend))]
    return masks


def kept_structure(frontend: nn.Module, masks: Mapping | None = None) -> Structure:
    """The structure that pruning `frontend` keeps: units with a non-zero eval-mode gate

    Relative to the original config, whether `frontend` is unpruned or already pruned.

    Raises
    ------
    units.EmptyLayerError
        When the gates close every channel of a CNN layer.
    """
    masks = within_blocks(deterministic_masks(frontend) if masks is None else masks)
    current = frontend_structure(frontend)
    fields: dict[str, list] = {}
    for kind in UNIT_KINDS.values():
        fields.update(kind.kept(masks, current))
    return Structure.from_dict(fields, frontend.config)
