"""attach_gates() and prune() on a whole WavLMSegmentation, and its checkpoints."""

import pytest
import torch
from helpers import tiny_model
from pyannote.audio import Model

from pyannote_wavlm_prune import WavLMSegmentation, attach_gates, prune, save_checkpoint
from pyannote_wavlm_prune.wavlm.cost import expected_params


def randomly_gated(family: str) -> WavLMSegmentation:
    model = attach_gates(tiny_model(family), units=("conv", "head", "ffn", "attention_layer", "ffn_layer"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.frontend.named_parameters():
            if name.endswith("log_alpha"):
                # about half the units closed, the others at varied soft values
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3.0)
    return model.eval()


@pytest.mark.parametrize("family", ["base", "large"])
def test_pruned_model_outputs_what_the_eval_mode_gated_model_outputs(family):
    gated = randomly_gated(family)
    pruned = prune(gated).eval()
    waveforms = torch.randn(2, 1, 24000)
    with torch.inference_mode():
        difference = (pruned(waveforms) - gated(waveforms)).abs().max().item()
    assert difference <= 1e-4
    assert expected_params(pruned.frontend) < expected_params(tiny_model(family).frontend)


def test_prune_leaves_the_gated_model_untouched():
    gated = randomly_gated("base")
    before = {name: tensor.clone() for name, tensor in gated.state_dict().items()}
    prune(gated)
    assert all(torch.equal(tensor, before[name]) for name, tensor in gated.state_dict().items())


def test_pruned_checkpoint_reloads_with_its_structure(tmp_path):
    pruned = prune(randomly_gated("large")).eval()
    save_checkpoint(pruned, tmp_path / "pruned.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "pruned.ckpt").eval()
    assert reloaded.structure == pruned.structure
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in pruned.parameters())
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():
        assert torch.equal(reloaded(waveforms), pruned(waveforms))


def test_gated_checkpoint_reloads_with_its_gates(tmp_path):
    gated = randomly_gated("base")
    save_checkpoint(gated, tmp_path / "gated.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "gated.ckpt").eval()
    assert reloaded.hparams.gates == ["conv", "head", "ffn", "attention_layer", "ffn_layer"]
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():
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
