"""Gating and pruning at the level of a WavLMSegmentation (its WavLM front end does the work)."""

from __future__ import annotations

from collections.abc import Iterable

from ..frontends.budget import masks_at_budget
from ..frontends.folding import fold_frontend
from ..frontends.gating import attach_frontend_gates, check_units, is_gated
from ..frontends.units import DEFAULT_UNITS
from .wavlm_segmentation import WavLMSegmentation


def _check_model(model, action: str) -> None:
    if not isinstance(model, WavLMSegmentation):
        raise ValueError(f"Cannot {action} a {type(model).__name__}: expected a WavLMSegmentation.")


def attach_gates(
    model: WavLMSegmentation, units: str | Iterable[str] = DEFAULT_UNITS
) -> WavLMSegmentation:
    """Add hard-concrete gates to `model`'s WavLM, in place, and return `model`

    Parameters
    ----------
    model : WavLMSegmentation
        Not gated yet; unpruned, or pruned already (to prune it further: the gates act on
        the units its structure kept).
    units : str or iterable of str, optional
        Unit kinds among `frontends.UNITS` (the registry `frontends.units.UNIT_KINDS`: CNN output
        channels, attention heads, FFN intermediate units, whole blocks). Defaults to
        `frontends.DEFAULT_UNITS`.

    The gated units are recorded in the hyper-parameters, so that a checkpoint of the gated
    model reloads (with `Model.from_pretrained`) with its gates and their learnt values.
    """
    _check_model(model, "attach gates to")
    units = check_units(units)
    attach_frontend_gates(model.frontend, units)
    model.hparams.gates = list(units)
    return model


def prune(
    model: WavLMSegmentation,
    sparsity: float | None = None,
    objective: str | None = None,
    num_samples: int | None = None,
    tolerance: float = 0.005,
) -> WavLMSegmentation:
    """A new, physically smaller model of `model`'s class: the units its gates close removed

    The eval-mode (deterministic) gates decide: units with a zero gate are removed, and the
    soft values of kept units are folded into the weights that follow them, so that the
    pruned model computes what the gated model computes in eval mode. The back end is
    copied as it is. `model` itself is left untouched (and its Lagrange multipliers, if it
    was a DistillPrune student, are not carried over).

    Parameters
    ----------
    model : WavLMSegmentation
        A gated model (a DistillPrune student), unpruned or already pruned; the result's
        structure is relative to the original architecture either way.
    sparsity : float or dict, optional
        Finish exactly at this budget: the marginal units are decided from the gates'
        scores until the pruned WavLM's sparsity is within `tolerance` of it (see
        `frontends.budget.masks_at_budget`); {module: target} for module-wise targets (each
        module of `frontends.cost.MODULES` within `tolerance` of its own). Defaults to None: the
        deterministic gates alone.
    objective : {"params", "macs"}, optional
        What `sparsity` counts. Defaults to the objective the gates were trained for
        (recorded by `DistillPrune.student()`), else "params".
    num_samples : int, optional
        Input length of "macs". Defaults to the training chunk the gates were trained on.
    tolerance : float, optional
        Defaults to 0.005.

    The result has `model.structure` set (a `Structure`), saved in its hyper-parameters, and
    is a standard pyannote checkpoint once saved. With `sparsity`, `result.budget_report`
    (a `BudgetReport`) says how many units differ from the deterministic gates.
    """
    _check_model(model, "prune")
    if not is_gated(model.frontend):
        raise ValueError(
            "This model has no gates to prune by: attach_gates() and train them (DistillPrune) first."
        )
    masks, report = None, None
    if sparsity is not None:
        trained_for = model.hparams.get("gates_objective") or {}
        objective = objective or trained_for.get("objective", "params")
        if objective == "macs" and num_samples is None:
            num_samples = trained_for.get("num_samples")
        masks, report = masks_at_budget(model.frontend, sparsity, objective, num_samples,
                                        tolerance)
    frontend_state, structure = fold_frontend(model.frontend, masks)
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith(("frontend.", "loss_func."))
    }
    state.update({f"frontend.{name}": tensor for name, tensor in frontend_state.items()})

    # same options: norms over pruned channels normalise as the gated network's did
    pruned = type(model)(**{**model.hparams, "structure": structure, "gates": None,
                            "gates_objective": None})
    pruned.specifications = model.specifications
    pruned.build()
    reference = next(iter(frontend_state.values()))
    pruned.to(device=reference.device, dtype=reference.dtype)
    pruned.load_state_dict(state, strict=True)
    if report is not None:
        pruned.budget_report = report
    return pruned.train(model.training)
