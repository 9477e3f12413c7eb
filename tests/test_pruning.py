"""Structures, pruned modules and pruning (docs/method.md#pruning): a pruned front end computes
what the eval-mode gated one computes."""

import copy

import pytest
import torch
from helpers import network_depth, rounding_bound
from torch import nn
from wavlm_helpers import (
    LAYOUTS,
    UNITS,
    close,
    count_parameters,
    heavily_pruned_frontend,
    max_abs_diff,
    prune_frontend,
    randomise_gates,
    tiny_frontend,
)

from pyannote_wavlm_prune.frontends import (
    REFERENCE_BASE_PLUS_S80,
    PrunedWavLMAttention,
    Structure,
    WavLMFrontEnd,
    attach_frontend_gates,
    deterministic_masks,
    expected_params,
    is_gated,
    kept_structure,
)
from pyannote_wavlm_prune.frontends.presets import base_plus_config, tiny_config


@pytest.fixture(scope="module")
def waveforms():
    return torch.randn(2, 16000 + 1234, generator=torch.Generator().manual_seed(3))


def assert_equal_up_to_rounding(first, second, waveforms) -> None:
    """Two front ends computing the same real arithmetic two ways (float64, so that rounding
    cannot hide a real difference) give the same hidden states up to float64 rounding."""
    with torch.no_grad():
        expected = first(waveforms.double())
        difference = max_abs_diff(expected, second(waveforms.double()))
    assert difference <= rounding_bound(expected, network_depth(first))


# --- structures -------------------------------------------------------------------------------


def test_full_structure_lists_every_unit_of_the_config():
    assert Structure.full(tiny_config(num_hidden_layers=2)).to_dict() == {
        "conv_channels": [32] * 7,
        "kept_heads": [[0, 1, 2, 3], [0, 1, 2, 3]],
        "ffn_widths": [64, 64],
    }


def test_reference_base_plus_s80_is_the_released_structure():
    structure = Structure.from_dict(REFERENCE_BASE_PLUS_S80, base_plus_config())
    assert structure == REFERENCE_BASE_PLUS_S80
    assert structure.conv_channels == (90, 161, 173, 181, 351, 155, 137)
    assert [len(heads) for heads in structure.kept_heads] == [2, 3, 3, 5, 2, 1, 4, 4, 0, 0,
                                                               2, 1]
    # the real indices of DiariZen's wavlm_base_s80_md
    assert structure.kept_heads[0] == (1, 6) and structure.kept_heads[3] == (0, 1, 4, 8, 11)
    assert sum(structure.ffn_widths) == 5279


@pytest.mark.parametrize(
    "change, message",
    [
        ({"conv_channels": [32] * 6}, r"conv_channels'\] has length 6: expected a list of 7"),
        ({"conv_channels": [32, 0, 32, 32, 32, 32, 32]}, r"\[1\] = 0: expected an int in \[1, 32\]"),
        ({"conv_channels": [33] + [32] * 6}, r"\[0\] = 33: expected an int in \[1, 32\]"),
        ({"kept_heads": [[0, 4], [0]]}, r"holds 4: expected head indices in \[0, 3\]"),
        ({"kept_heads": [[1, 1], [0]]}, r"\[0\] = \[1, 1\] repeats a head"),
        ({"kept_heads": [[2, 1], [0]]}, r"expected increasing indices"),
        ({"kept_heads": [[0]]}, r"kept_heads'\] has length 1: expected a list of 2"),
        ({"ffn_widths": [-1, 8]}, r"\[0\] = -1: expected an int in \[0, 64\]"),
        ({"ffn_widths": [8, 65]}, r"\[1\] = 65: expected an int in \[0, 64\]"),
        ({"heads": []}, r"unknown keys \['heads'\]"),
        ({"attention_layers": [False, True]}, r"removes attention block 0 but keeps heads \[0\]"),
    ],
)
def test_invalid_structures_raise_naming_the_bad_value(change, message):
    structure = {"conv_channels": [32] * 7, "kept_heads": [[0], [0]], "ffn_widths": [8, 8]}
    structure.update(change)
    with pytest.raises(ValueError, match=message):
        Structure.from_dict(structure, tiny_config(num_hidden_layers=2))


def test_missing_key_raises():
    with pytest.raises(ValueError, match=r"lacks \['ffn_widths'\]"):
        Structure.from_dict({"conv_channels": [32] * 7, "kept_heads": [[], []]},
                           tiny_config(num_hidden_layers=2))


# --- structured front ends --------------------------------------------------------------------


@pytest.mark.parametrize("family", LAYOUTS)
def test_full_structure_through_sdpa_attention_equals_stock_transformers(family, waveforms):
    stock = tiny_frontend(family).double()
    structured = tiny_frontend(family, structure=Structure.full(stock.config).to_dict()).double()
    # same parameter names and shapes: stock weights load as they are
    structured.load_state_dict(stock.state_dict(), strict=True)
    assert_equal_up_to_rounding(stock, structured, waveforms)


def test_reference_structure_builds_a_base_plus_front_end_of_those_sizes():
    frontend = WavLMFrontEnd(base_plus_config(), structure=REFERENCE_BASE_PLUS_S80).eval()
    layers = frontend.wavlm.encoder.layers
    assert frontend.config.hidden_size == 768 and frontend.config.conv_dim[0] == 512
    assert frontend.wavlm.feature_extractor.conv_layers[0].conv.weight.shape == (90, 1, 10)
    assert frontend.wavlm.feature_extractor.conv_layers[6].conv.weight.shape == (137, 155, 2)
    assert layers[3].attention.q_proj.weight.shape == (5 * 64, 768)
    assert layers[3].feed_forward.intermediate_dense.weight.shape == (1080, 768)
    assert [name for name, _ in layers[8].attention.named_parameters()] == ["out_proj.bias"]
    with torch.no_grad():
        hidden_states = frontend(torch.randn(1, 8000))
    assert len(hidden_states) == 13 and hidden_states[-1].shape == (1, 24, 768)


def test_layer_0_keeps_the_whole_relative_position_table_without_heads():
    structure = {"conv_channels": [32] * 7, "kept_heads": [[], [1, 3]], "ffn_widths": [8, 8]}
    frontend = tiny_frontend(num_layers=2, structure=structure)
    attention = frontend.wavlm.encoder.layers[0].attention
    assert attention.rel_attn_embed.weight.shape == (320, 4)
    assert frontend.wavlm.encoder.layers[1].attention.rel_attn_embed is None


def test_a_layer_without_heads_or_ffn_units_keeps_only_the_output_biases():
    structure = {"conv_channels": [32] * 7, "kept_heads": [[0], []], "ffn_widths": [8, 0]}
    layer = tiny_frontend(num_layers=2, structure=structure).wavlm.encoder.layers[1]
    assert {name: tuple(p.shape) for name, p in layer.attention.named_parameters()} == {
        "out_proj.bias": (32,)}
    assert {name: tuple(p.shape) for name, p in layer.feed_forward.named_parameters()} == {
        "output_dense.bias": (32,)}


@pytest.mark.parametrize("family", LAYOUTS)
def test_removed_blocks_keep_no_parameter(family):
    structure = {"conv_channels": [32] * 7, "kept_heads": [[0], []], "ffn_widths": [8, 0],
                 "attention_layers": [True, False], "ffn_layers": [True, False]}
    layer = tiny_frontend(family, num_layers=2, structure=structure).wavlm.encoder.layers[1]
    assert count_parameters(layer.attention) == count_parameters(layer.feed_forward) == 0
    # pre-LN (Large): a removed block's input norm goes with it; post-LN norms stay
    expected_norms = 0 if family.endswith("large") else 4 * 32
    assert count_parameters(layer) == expected_norms


# --- pruning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", LAYOUTS)
def test_pruned_front_end_equals_the_eval_mode_gated_one(family, waveforms):
    gated = heavily_pruned_frontend(family).double()
    pruned, structure = prune_frontend(gated)
    assert all(0 < c < 32 for c in structure["conv_channels"])  # every CNN layer pruned
    assert structure["kept_heads"][0] == structure["kept_heads"][2] == []
    assert structure["attention_layers"] == [True, False, True, True]
    assert structure["ffn_layers"] == [True, True, False, True]
    assert structure["ffn_widths"][3] == 0
    assert_equal_up_to_rounding(gated, pruned, waveforms)


@pytest.mark.parametrize("family", LAYOUTS)
def test_removing_layer_0_attention_keeps_the_position_bias_of_later_layers(family, waveforms):
    gated = tiny_frontend(family)
    attach_frontend_gates(gated, ("head", "attention_layer"))
    randomise_gates(gated)
    close(gated, "attention_layer", 0)
    pruned, structure = prune_frontend(gated.double())
    assert structure["attention_layers"][0] is False
    assert all(structure["kept_heads"][1:])
    assert_equal_up_to_rounding(gated, pruned, waveforms)


@pytest.mark.parametrize("family", LAYOUTS)
def test_pruning_a_gated_front_end_in_train_mode_uses_eval_masks(family, waveforms):
    gated = heavily_pruned_frontend(family).double().train()
    pruned, _ = prune_frontend(gated)
    assert pruned.training and gated.training
    assert_equal_up_to_rounding(gated.eval(), pruned.eval(), waveforms)


def test_pruning_keeps_the_units_with_non_zero_eval_gate():
    gated = tiny_frontend(num_layers=2)
    attach_frontend_gates(gated, ("head", "ffn"))
    randomise_gates(gated)
    close(gated, "head", 1)
    _, structure = prune_frontend(gated)
    head_mask = gated.gates["head"][0].deterministic_mask()
    ffn_mask = gated.gates["ffn"][1].deterministic_mask()
    assert structure["kept_heads"] == [torch.nonzero(head_mask).flatten().tolist(), []]
    assert structure["ffn_widths"][1] == int((ffn_mask > 0).sum())
    assert structure["conv_channels"] == [32] * 7
    assert "attention_layers" not in structure  # nothing removed: compact form


def test_pruning_leaves_the_gated_front_end_untouched(waveforms):
    gated = heavily_pruned_frontend("base")
    state = copy.deepcopy(gated.state_dict())
    with torch.no_grad():
        before = gated(waveforms)
        prune_frontend(gated)
        after = gated(waveforms)
    assert is_gated(gated)
    assert state.keys() == gated.state_dict().keys()
    # untouched weights, then the same arithmetic: exactly the same
    assert all(torch.equal(state[key], value) for key, value in gated.state_dict().items())
    assert max_abs_diff(before, after) == 0.0


@pytest.mark.parametrize("family", LAYOUTS)
def test_a_pruned_front_end_reloads_from_its_structure_and_state_dict(family, waveforms):
    pruned, structure = prune_frontend(heavily_pruned_frontend(family))
    reloaded = WavLMFrontEnd(pruned.config, structure=structure).eval()
    reloaded.load_state_dict(pruned.state_dict(), strict=True)
    with torch.no_grad():  # same weights, same process, same arithmetic: exact
        assert max_abs_diff(pruned(waveforms), reloaded(waveforms)) == 0.0


def test_pruned_front_end_is_trainable_and_uses_sdpa_attention():
    pruned, _ = prune_frontend(heavily_pruned_frontend("large"))
    attention = pruned.wavlm.encoder.layers[3].attention
    assert isinstance(attention, PrunedWavLMAttention)
    pruned.train()
    sum(h.square().mean() for h in pruned(torch.randn(2, 8000))).backward()
    assert attention.q_proj.weight.grad.abs().sum().item() > 0
    assert pruned.wavlm.feature_projection.pruned_channels_projection.grad is not None


def test_pruning_an_ungated_front_end_raises():
    with pytest.raises(ValueError, match="carries no gates"):
        prune_frontend(tiny_frontend(num_layers=2))


def test_a_cnn_layer_whose_gates_all_close_keeps_its_best_channel():
    gated = tiny_frontend(num_layers=2)
    attach_frontend_gates(gated, UNITS)
    close(gated, "conv", 4)
    with torch.no_grad():
        gated.gates["conv"][4].log_alpha[9] = -19.0  # the least closed
    _, structure = prune_frontend(gated)
    assert structure["conv_channels"] == [32, 32, 32, 32, 1, 32, 32]
    # masks that close every channel (given by hand) cannot be pruned
    masks = deterministic_masks(gated)
    assert masks["conv"][4].nonzero().flatten().tolist() == [9]
    masks["conv"][4].zero_()
    with pytest.raises(ValueError, match="Every channel of CNN layer 4 is gated off"):
        kept_structure(gated, masks)


def test_gates_not_attached_leave_their_units_whole():
    gated = tiny_frontend(num_layers=2)
    attach_frontend_gates(gated, ("attention_layer",))
    close(gated, "attention_layer", 0)
    pruned, structure = prune_frontend(gated)
    assert structure == {"conv_channels": [32] * 7, "kept_heads": [[], [0, 1, 2, 3]],
                         "ffn_widths": [64, 64], "attention_layers": [False, True]}
    layer_0 = pruned.wavlm.encoder.layers[0]
    assert [name for name, _ in layer_0.attention.named_parameters()] == ["rel_attn_embed.weight"]
    assert isinstance(layer_0.layer_norm, nn.LayerNorm)  # post-LN (Base): the norm stays


# --- pruning an already pruned front end further ---------------------------------------------


def pruned_frontend(family: str, pruned_norms: str) -> WavLMFrontEnd:
    """A pruned tiny front end (every CNN layer pruned, layers without heads or FFN units,
    removed blocks), ungated, eval mode

    "original": the pruned front end of `heavily_pruned_frontend`, its norms counting the
    original channels. "kept": that structure with plain norms over the kept channels and a
    per-channel scale on the last CNN output (DiariZen's models), random weights and norms.
    """
    pruned, structure = prune_frontend(heavily_pruned_frontend(family))
    if pruned_norms == "original":
        return pruned
    frontend = tiny_frontend(family, structure=structure, pruned_norms="kept",
                             conv_output_scale=True)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        frontend.conv_output_scale.copy_(torch.rand(frontend.conv_output_scale.shape,
                                                    generator=generator) + 0.5)
        for name, parameter in frontend.named_parameters():
            if "layer_norm" in name:  # norms whose statistics matter, not identities
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return frontend


def gated_again(frontend: WavLMFrontEnd, seed: int = 1) -> WavLMFrontEnd:
    """`frontend` with gates on every unit kind, soft eval values, a quarter of each closed."""
    attach_frontend_gates(frontend, UNITS)
    randomise_gates(frontend, seed=seed)
    return frontend


@pytest.mark.parametrize("family", LAYOUTS)
@pytest.mark.parametrize("pruned_norms", ["original", "kept"])
def test_pruning_a_pruned_front_end_again_equals_its_eval_mode_gated_one(family, pruned_norms,
                                                                        waveforms):
    first = pruned_frontend(family, pruned_norms).double()
    gated = gated_again(copy.deepcopy(first))
    pruned, structure = prune_frontend(gated)
    # every CNN layer loses more channels, and pruning keeps the norms' semantics
    assert all(0 < c < before for c, before in zip(structure["conv_channels"],
                                                   first.structure.conv_channels, strict=True))
    assert pruned.pruned_norms == pruned_norms
    assert_equal_up_to_rounding(gated, pruned, waveforms)
    with torch.no_grad():  # and the gates made a difference (closing a quarter of every group)
        assert max_abs_diff(first(waveforms.double()), pruned(waveforms.double())) > 1e-2


@pytest.mark.parametrize("family", LAYOUTS)
def test_pruning_further_keeps_real_head_indices_and_counts_exactly(family):
    first = pruned_frontend(family, "original")
    gated = gated_again(copy.deepcopy(first))
    pruned, _ = prune_frontend(gated)
    before, after = first.structure, pruned.structure
    for layer, (kept_before, kept_after) in enumerate(zip(before.kept_heads, after.kept_heads,
                                                          strict=True)):
        mask = gated.gates["head"][layer].deterministic_mask()
        # the original indices of the heads the mask keeps, among those `first` kept
        assert list(kept_after) == [kept_before[i] for i in torch.nonzero(mask).flatten()]
        assert set(kept_after) <= set(kept_before)
    assert all(a <= b for a, b in zip(after.ffn_widths, before.ffn_widths, strict=True))
    assert count_parameters(pruned) == after.params() == expected_params(pruned)
    assert after.params() < before.params()
    assert after.sparsity() > before.sparsity()


def test_pruning_further_plain_norms_have_no_vector_for_the_pruned_channels():
    first = pruned_frontend("large", "kept")
    pruned, _ = prune_frontend(gated_again(copy.deepcopy(first)))
    structure = pruned.structure
    assert not hasattr(pruned.wavlm.feature_projection, "pruned_channels_projection")
    assert count_parameters(pruned) == expected_params(pruned)
    assert count_parameters(pruned) == structure.params() - structure.config.hidden_size
    assert pruned.conv_output_scale.shape == (structure.conv_channels[-1],)
