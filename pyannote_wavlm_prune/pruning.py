"""Gating and pruning at the level of a WavLMSegmentation (its WavLM front end does the work)."""

from __future__ import annotations

from collections.abc import Iterable

from .models.wavlm_segmentation import WavLMSegmentation
from .wavlm.gating import DEFAULT_UNITS, attach_frontend_gates, is_gated
from .wavlm.pruning import prune_frontend


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
        Unpruned and not gated yet.
    units : str or iterable of str, optional
        Among "conv" (CNN output channels), "head" (attention heads), "ffn" (FFN
        intermediate units), "attention_layer" and "ffn_layer" (whole blocks).
        Defaults to ("conv", "head", "ffn").

    The gated units are recorded in the hyper-parameters, so that a checkpoint of the gated
    model reloads (with `Model.from_pretrained`) with its gates and their learnt values.
    """
    _check_model(model, "attach gates to")
    units = (units,) if isinstance(units, str) else tuple(units)
    attach_frontend_gates(model.frontend, units)
    model.hparams.gates = list(units)
    return model


def prune(model: WavLMSegmentation) -> WavLMSegmentation:
    """A new, physically smaller WavLMSegmentation: the units that `model`'s gates close removed

    The eval-mode (deterministic) gates decide: units with a zero gate are removed, and the
    soft values of kept units are folded into the weights that follow them, so that the
    pruned model computes what the gated model computes in eval mode. The back end is
    copied as it is. `model` itself is left untouched (and its Lagrange multipliers, if it
    was a DistillPrune student, are not carried over).

    The result has `model.structure` set (conv_channels, kept_heads, ffn_widths), saved in
    its hyper-parameters, and is a standard pyannote checkpoint once saved.
    """
    _check_model(model, "prune")
    if not is_gated(model.frontend):
        raise ValueError(
            "This model has no gates to prune by: attach_gates() and train them (DistillPrune) first."
        )
    pruned_frontend, structure = prune_frontend(model.frontend)

    hparams = dict(model.hparams)
    # norms over the newly pruned channels count them as zeros, as the gated network did
    hparams.update(structure=structure, gates=None, pruned_norms="original")
    pruned = WavLMSegmentation(**hparams)
    pruned.specifications = model.specifications
    pruned.build()

    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.startswith(("frontend.", "loss_func."))
    }
    state.update({f"frontend.{name}": tensor for name, tensor in pruned_frontend.state_dict().items()})
    pruned.load_state_dict(state, strict=True)
    return pruned.train(model.training)
