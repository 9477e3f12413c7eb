"""attach_gates() and prune() on a whole WavLMSegmentation, and its checkpoints."""

import copy

import pytest
import torch
from helpers import network_depth, rounding_bound, tiny_model
from pyannote.audio import Model
from wavlm_helpers import LAYOUTS

from pyannote_wavlm_prune import WavLMSegmentation, attach_gates, prune, save_checkpoint
from pyannote_wavlm_prune.frontends.cost import expected_params

ALL_UNITS = ("conv", "head", "ffn", "attention_layer", "ffn_layer")


def with_random_gates(model: WavLMSegmentation, seed: int = 1) -> WavLMSegmentation:
    """`model` gated on every unit kind, about half the units closed, the others soft."""
    attach_gates(model, units=ALL_UNITS)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.frontend.named_parameters():
            if name.endswith("log_alpha"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3.0)
    return model.eval()


def randomly_gated(family: str) -> WavLMSegmentation:
    return with_random_gates(tiny_model(family))


@pytest.mark.parametrize("family", LAYOUTS)
def test_pruned_model_outputs_what_the_eval_mode_gated_model_outputs(family):
    # float64, pruning included: the same real arithmetic two ways, equal up to rounding
    gated = randomly_gated(family).double()
    pruned = prune(gated).eval()
    waveforms = torch.randn(2, 1, 24000, dtype=torch.float64)
    with torch.inference_mode():
        expected = gated(waveforms)
        difference = (pruned(waveforms) - expected).abs().max().item()
    assert difference <= rounding_bound(expected, network_depth(gated))
    assert expected_params(pruned.frontend) < expected_params(tiny_model(family).frontend)


def test_prune_leaves_the_gated_model_untouched():
    gated = randomly_gated("base")
    before = {name: tensor.clone() for name, tensor in gated.state_dict().items()}
    prune(gated)
    assert all(torch.equal(tensor, before[name])  # untouched: not even rounded
               for name, tensor in gated.state_dict().items())


def test_pruned_checkpoint_reloads_with_its_structure(tmp_path):
    pruned = prune(randomly_gated("large")).eval()
    save_checkpoint(pruned, tmp_path / "pruned.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "pruned.ckpt").eval()
    assert reloaded.structure == pruned.structure
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in pruned.parameters())
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(reloaded(waveforms), pruned(waveforms))


def test_gated_checkpoint_reloads_with_its_gates(tmp_path):
    gated = randomly_gated("base")
    save_checkpoint(gated, tmp_path / "gated.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "gated.ckpt").eval()
    assert reloaded.hparams.gates == ["conv", "head", "ffn", "attention_layer", "ffn_layer"]
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(reloaded(waveforms), gated(waveforms))


def test_pruning_a_model_without_gates_is_refused():
    with pytest.raises(ValueError, match="no gates to prune by"):
        prune(tiny_model())


def test_gating_something_else_than_a_wavlm_segmentation_is_refused():
    from pyannote.audio.models.segmentation import PyanNet

    with pytest.raises(ValueError, match="Cannot attach gates to a PyanNet"):
        attach_gates(PyanNet())


def test_unknown_gated_unit_is_refused():
    with pytest.raises(ValueError, match="neurons"):
        attach_gates(tiny_model(), units=("conv", "neurons"))


@pytest.mark.parametrize("family", LAYOUTS)
def test_a_pruned_model_prunes_further_to_what_its_gated_copy_outputs(family):
    first = prune(randomly_gated(family)).eval()
    # float64, pruning included: the same real arithmetic two ways, equal up to rounding
    gated = with_random_gates(copy.deepcopy(first), seed=2).double()
    second = prune(gated).eval()
    waveforms = torch.randn(2, 1, 24000, dtype=torch.float64)
    with torch.inference_mode():
        expected = gated(waveforms)
        difference = (second(waveforms) - expected).abs().max().item()
    assert difference <= rounding_bound(expected, network_depth(gated))
    # smaller again, in real head indices of the original layers
    assert expected_params(second.frontend) < expected_params(first.frontend)
    assert second.structure.sparsity() > first.structure.sparsity()
    for kept, kept_before in zip(second.structure.kept_heads, first.structure.kept_heads,
                                 strict=True):
        assert set(kept) <= set(kept_before)
    assert sum(p.numel() for p in second.frontend.parameters()) == second.structure.params()


def test_a_gated_pruned_checkpoint_reloads_with_its_structure_and_gates(tmp_path):
    first = prune(randomly_gated("large")).eval()
    gated = with_random_gates(first, seed=2)
    save_checkpoint(gated, tmp_path / "gated.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "gated.ckpt").eval()
    assert reloaded.structure == first.structure and reloaded.hparams.gates == list(ALL_UNITS)
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(reloaded(waveforms), gated(waveforms))
