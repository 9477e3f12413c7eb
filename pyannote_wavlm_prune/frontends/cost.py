"""Cost model of a front end (WavLM, HuBERT, wav2vec 2.0): parameters and multiply-accumulates.

One set of formulas (each unit kind's terms, `units/`, plus the parts never pruned) serves:

- a gated front end: sizes are expectations under the hard-concrete gates (float64 tensors,
  differentiable in every gate's log_alpha), the quantities the pruning objective targets;
- a pruned front end, or a `Structure`: exact integers (`Structure.params()`, `.macs()`);
- an unpruned, ungated front end: exact integers.

What is counted
---------------
Parameters: every `nn.Parameter` of the front end (that is of `frontend.wavlm`), gates
excluded. A pruned front end's count equals `sum(p.numel() for p in frontend.parameters())`.

MACs (for one waveform of `num_samples` samples): the multiply-accumulates of matrix
products and convolutions, the operations `torch.utils.flop_counter.FlopCounterMode` counts
(its flops / 2): CNN convolutions, feature projection, positional convolution, q/k/v/out
projections, attention scores and weighted values, the relative-position gate projection
(gru_rel_pos_linear) and the FFN. Not counted, by either: normalisations, activations,
softmax, bias additions, elementwise products (gates, position-bias gating) and embedding
look-ups (a few per mille of the total).

Expectations
------------
With P(unit open) = p_i per gate, expected sizes are sums of p_i (C^, H^, F^) and products
of independent gates' expectations (C^_{l-1} C^_l, A^_j H^_j). Parts that exist only while
something is kept or removed use the exact probability of that event: the gate projection
of a layer exists iff one of its heads is open (1 - prod(1 - p_i)); the feature projection
carries one extra vector of E parameters iff a channel of the last CNN layer is closed
(1 - prod(p_i)) or was pruned before, and never under plain norms over the kept channels
(pruned_norms="kept"), see `units.conv.PrunedFeatureProjection`. All gates open: exact counts.

A gated front end that is already pruned has gates on its kept units only: its expected
sizes, and every sparsity, are still relative to the unpruned architecture of its config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from transformers import PretrainedConfig

from .config import conv_frames
from .gates import HardConcreteGate
from .gating import frontend_structure, is_gated, kept_structure
from .structure import Structure, check_metric
from .units import UNIT_KINDS, EmptyLayerError, Sizes, total_macs, total_params, units_cost

# modules of a front end that module-wise pruning gives targets of their own: the unit kinds
# each holds (a module's sparsity counts what those kinds carry, see `module_sparsity`)
MODULES = {
    "cnn": ("conv",),  # CNN channels (and the feature projection's columns that read them)
    "transformer": ("head", "ffn", "attention_layer", "ffn_layer"),
    "heads": ("head", "attention_layer"),
    "ffn": ("ffn", "ffn_layer"),
}


def _sizes(frontend: nn.Module | Structure, closed: Iterable[str] = ()) -> Sizes:
    """Exact sizes of the front end's modules (or of a `Structure`), expectations for its
    gated unit kinds

    closed: unit kinds whose every gate is taken as closed (the smallest sizes pruning can
    give them: a CNN layer keeps one channel).
    """
    structure = frontend if isinstance(frontend, Structure) else frontend_structure(frontend)
    sizes = structure.sizes()
    if not isinstance(frontend, Structure) and is_gated(frontend):
        for unit, gates in frontend.gates.items():
            sizes.update(UNIT_KINDS[unit].expected_sizes(gates, structure))
    for unit in closed:
        kind = UNIT_KINDS[unit]
        gates = [HardConcreteGate(size, min_units=min(kind.min_kept, size))
                 for size in kind.group_sizes(structure)]
        for gate in gates:
            gate.log_alpha.data.fill_(-math.inf)  # P(open) = 0
        with torch.no_grad():
            sizes.update(kind.expected_sizes(gates, structure))
    if getattr(frontend, "pruned_norms", "original") == "kept":
        # plain norms over the kept channels (DiariZen's models), gated or pruned: the
        # feature projection has no vector for the pruned channels (`Structure.params()`,
        # which sees no front end, counts it)
        sizes["last_conv_reduced"] = [0]
    return sizes


def _macs(config: PretrainedConfig, sizes: Sizes, num_samples: int):
    return total_macs(config, sizes, conv_frames(config, num_samples))


def _as_result(value) -> torch.Tensor | int:
    return value if isinstance(value, torch.Tensor) else int(round(value))


def expected_params(frontend: nn.Module) -> torch.Tensor | int:
    """Number of parameters of a front end (gates excluded)

    Gated front end: the expectation under its gates, a float64 scalar tensor differentiable
    in the gates' log_alpha. Otherwise (unpruned or pruned): the exact count, an int.
    """
    return _as_result(total_params(frontend.config, _sizes(frontend)))


def expected_macs(frontend: nn.Module, num_samples: int) -> torch.Tensor | int:
    """Multiply-accumulates for one waveform of `num_samples` samples (see module docstring)

    Gated front end: the expectation under its gates, a float64 scalar tensor differentiable
    in the gates' log_alpha. Otherwise (unpruned or pruned): the exact count, an int.
    """
    return _as_result(_macs(frontend.config, _sizes(frontend), num_samples))


def check_module(module: str) -> tuple[str, ...]:
    """The unit kinds of `module`, or a ValueError naming the modules there are."""
    if module not in MODULES:
        raise ValueError(f"module {module!r}: expected one of {list(MODULES)}.")
    return MODULES[module]


def _sparsity_of(config: PretrainedConfig, sizes: Sizes, metric: str, num_samples: int | None,
                 module: str | None = None):
    """1 - cost(sizes) / cost(unpruned config): of the whole front end (module None), or of
    the share of `module`'s unit kinds."""
    check_metric(metric, num_samples)
    full = Structure.full(config).sizes()
    if module is None:
        if metric == "params":
            return 1.0 - total_params(config, sizes) / total_params(config, full)
        return 1.0 - _macs(config, sizes, num_samples) / _macs(config, full, num_samples)
    units = check_module(module)
    frames = conv_frames(config, num_samples) if metric == "macs" else None
    return 1.0 - (units_cost(config, sizes, units, metric, frames)
                  / units_cost(config, full, units, metric, frames))


def prunable_share(config: PretrainedConfig, modules, metric: str = "params",
                   num_samples: int | None = None) -> float:
    """The share of the unpruned front end's cost (params or MACs) that `modules` hold

    With the same sparsity u for each of disjoint `modules`, the front end's sparsity is
    u x this share (what no module holds is never pruned).
    """
    check_metric(metric, num_samples)
    full = Structure.full(config)
    frames = conv_frames(config, num_samples) if metric == "macs" else None
    units = [unit for module in modules for unit in check_module(module)]
    return float(units_cost(config, full.sizes(), units, metric, frames)
                 / full.cost(metric, num_samples))


def module_sparsity(
    frontend: nn.Module | Structure,
    module: str,
    metric: str = "params",
    num_samples: int | None = None,
) -> torch.Tensor | float:
    """Sparsity of one module (`MODULES`): 1 - its units' cost / their unpruned cost

    A gated front end: the expectation under its gates (differentiable); a front end or a
    `Structure`: exact. Relative to the unpruned architecture of the config, as every
    sparsity; the parts no unit kind prunes are in neither cost.
    """
    if isinstance(frontend, Structure):
        config, sizes = frontend.config, frontend.sizes()
    else:
        config, sizes = frontend.config, _sizes(frontend)
    sparsity = _sparsity_of(config, sizes, metric, num_samples, module)
    return sparsity if isinstance(sparsity, torch.Tensor) else float(sparsity)


def smallest_sparsity(
    frontend: nn.Module | Structure,
    units: Iterable[str],
    metric: str = "params",
    num_samples: int | None = None,
    module: str | None = None,
) -> float:
    """The highest sparsity pruning `units` of `frontend` can reach (relative to its config)

    Every gated unit removed, except what a layer cannot lose (a CNN layer keeps one
    channel); what no unit kind prunes (positional convolution, layer norms, width E) stays.
    A target above it is out of reach: pruning goes as far as this. `module`: the sparsity
    of that module (`module_sparsity`) rather than of the whole front end. `frontend` may be
    a `Structure` (e.g. `Structure.full(config)`: from the unpruned architecture).
    """
    sizes = _sizes(frontend, closed=units)
    return float(_sparsity_of(frontend.config, sizes, metric, num_samples, module))


def expected_sparsity(
    frontend: nn.Module,
    reference: nn.Module | PretrainedConfig,
    metric: str = "params",
    num_samples: int | None = None,
) -> torch.Tensor | float:
    """1 - cost(frontend) / cost(reference), cost being parameters or MACs

    Parameters
    ----------
    frontend : WavLMFrontEnd
        Gated (expected, differentiable tensor) or not (exact float).
    reference : WavLMFrontEnd or transformers config
        The teacher. A config stands for its unpruned architecture.
    metric : {"params", "macs"}
        What is counted. Defaults to "params".
    num_samples : int, optional
        Input length for "macs" (the training chunk length, as attention is quadratic in it).
    """
    check_metric(metric, num_samples)
    if isinstance(reference, PretrainedConfig):
        reference_config, reference_sizes = reference, Structure.full(reference).sizes()
    else:
        reference_config, reference_sizes = reference.config, _sizes(reference)
    if metric == "params":
        cost = expected_params(frontend)
        reference_cost = total_params(reference_config, reference_sizes)
    else:
        cost = expected_macs(frontend, num_samples)
        reference_cost = _macs(reference_config, reference_sizes, num_samples)
    if isinstance(reference_cost, torch.Tensor):
        # a gated teacher is a constant for the student's objective
        reference_cost = reference_cost.detach()
    sparsity = 1.0 - cost / reference_cost
    return sparsity if isinstance(sparsity, torch.Tensor) else float(sparsity)


@torch.no_grad()
def shift_gates_to_sparsity(
    frontend: nn.Module,
    reference: nn.Module | PretrainedConfig,
    target: float,
    metric: str = "params",
    num_samples: int | None = None,
    bound: float = 30.0,
    iterations: int = 40,
    module: str | None = None,
) -> float:
    """Shift every gate's log_alpha by one offset so that the expected sparsity is `target`

    `module`: shift the gates of that module's units only (`MODULES`), to put its own
    sparsity (`module_sparsity`) on `target`; `reference` is then the unpruned config.

    The expected sparsity falls as the offset grows (every unit opens), so a bisection finds
    the offset; the gates keep their order, which the distillation learns. In place; returns
    the offset: 0 when even every gate open is sparser than `target` (a target of 0 at the
    start of the warm-up), -bound when even every gate closed is not as sparse.
    """
    check_metric(metric, num_samples)
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates: attach_frontend_gates() first.")
    units = check_module(module) if module is not None else tuple(frontend.gates)
    parameters = [gate.log_alpha for unit, group in frontend.gates.items() if unit in units
                  for gate in group]
    originals = [parameter.clone() for parameter in parameters]

    def sparsity_at(offset: float) -> float:
        for parameter, original in zip(parameters, originals, strict=True):
            parameter.copy_(original + offset)
        if module is not None:
            return float(module_sparsity(frontend, module, metric, num_samples))
        return float(expected_sparsity(frontend, reference, metric, num_samples))

    low, high = -bound, bound  # sparsity_at(low) >= sparsity_at(high)
    if sparsity_at(high) >= target:
        # denser than every gate open: out of reach (e.g. a target of 0), leave the gates
        offset = 0.0
    elif sparsity_at(low) <= target:
        offset = low  # as sparse as the gates can make it
    else:
        for _ in range(iterations):
            middle = (low + high) / 2
            if sparsity_at(middle) > target:
                low = middle
            else:
                high = middle
        offset = (low + high) / 2
    sparsity_at(offset)
    return offset


def pruned_sparsity(frontend: nn.Module, metric: str = "params", num_samples: int | None = None,
                    module: str | None = None) -> float:
    """Exact sparsity of what pruning a gated front end would make now

    1 - cost(pruned) / cost(unpruned), cost being parameters or MACs for `num_samples`
    samples (of `module` only, if given: `module_sparsity`). Unlike `expected_sparsity`, it
    counts the structure of the eval-mode (deterministic) masks, that is what pruning keeps.
    NaN when that structure cannot be pruned (masks given by hand that empty a CNN layer:
    the gates' own keep a channel in each).
    """
    check_metric(metric, num_samples)
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates: attach_frontend_gates() first.")
    try:
        structure = kept_structure(frontend)
    except EmptyLayerError:
        return float("nan")
    if module is not None:
        return module_sparsity(structure, module, metric, num_samples)
    return structure.sparsity(metric, num_samples)
