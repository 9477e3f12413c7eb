"""Helpers shared by the gate, cost and pruning tests (tiny WavLM front ends, MAC counting)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pyannote_wavlm_prune.frontends import (
    UNITS,
    WavLMFrontEnd,
    attach_frontend_gates,
    fold_frontend,
)
from pyannote_wavlm_prune.frontends.presets import tiny_config

# 1.3 s: not a whole number of frames, and T^2 attention terms matter
NUM_SAMPLES = 20811

aten = torch.ops.aten


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch 2.11's FlopCounterMode counts the GPU SDPA kernels but not the CPU one: same formula
    batch, heads, query_length, head_dim = query_shape
    return 2 * batch * heads * query_length * key_shape[2] * (head_dim + value_shape[3])


def flop_counter_macs(module: torch.nn.Module, waveforms: torch.Tensor) -> int:
    """Multiply-accumulates FlopCounterMode counts for `module(waveforms)` (flops / 2)."""
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        module(waveforms)
    return counter.get_total_flops() // 2


# every architecture in both layouts: "base" (post-LN, GroupNorm CNN), "large" (pre-LN,
# LayerNorm CNN); a bare layout is WavLM's
LAYOUTS = ["base", "large", "hubert-base", "hubert-large", "wav2vec2-base", "wav2vec2-large"]


def layout_config(layout: str = "base", **overrides):
    """The tiny config of a layout of `LAYOUTS` ("hubert-large": HuBERT's Large layout)."""
    architecture, _, family = layout.rpartition("-")
    return tiny_config(family, architecture=architecture or "wavlm", **overrides)


def tiny_frontend(family: str = "base", num_layers: int = 4, **structure_or_nothing):
    """A tiny random front end of a layout (unpruned unless `structure=` is given), eval mode."""
    return WavLMFrontEnd(layout_config(family, num_hidden_layers=num_layers),
                         **structure_or_nothing).eval()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("gates."))


@torch.no_grad()
def open_all_gates(frontend: WavLMFrontEnd) -> None:
    for group in frontend.gates.values():
        for gate in group:
            gate.log_alpha.fill_(100.0)


@torch.no_grad()
def randomise_gates(frontend: WavLMFrontEnd, seed: int = 0) -> None:
    """Gates with soft eval values (log_alpha ~ N(2, 2)), a quarter of each group closed."""
    generator = torch.Generator().manual_seed(seed)
    for unit, group in frontend.gates.items():
        for gate in group:
            values = torch.normal(2.0, 2.0, size=gate.log_alpha.shape, generator=generator)
            if unit in ("conv", "head", "ffn"):
                closed = torch.randperm(gate.num_units, generator=generator)[: gate.num_units // 4]
                values[closed] = -20.0
            gate.log_alpha.copy_(values.abs() if gate.num_units == 1 else values)


@torch.no_grad()
def close(frontend: WavLMFrontEnd, unit: str, layer: int) -> None:
    """Close every unit of gate group (unit, layer)."""
    frontend.gates[unit][layer].log_alpha.fill_(-20.0)


def heavily_pruned_frontend(family: str) -> WavLMFrontEnd:
    """A gated tiny front end (eval mode) exercising every pruning case

    Every CNN layer loses channels; layer 0 and layer 2 lose all heads; layer 1 loses its whole
    attention block; layer 3 loses all FFN units; layer 2 loses its whole FFN block; all other
    units have soft (neither 0 nor 1) eval-mode gate values.
    """
    frontend = tiny_frontend(family)
    attach_frontend_gates(frontend, UNITS)
    randomise_gates(frontend)
    close(frontend, "head", 0)
    close(frontend, "head", 2)
    close(frontend, "attention_layer", 1)
    close(frontend, "ffn", 3)
    close(frontend, "ffn_layer", 2)
    return frontend


def max_abs_diff(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    assert len(first) == len(second)
    return max((a - b).abs().max().item() for a, b in zip(first, second, strict=True))


def prune_frontend(gated: WavLMFrontEnd) -> tuple[WavLMFrontEnd, dict]:
    """The pruned front end of `gated` (same mode, device, dtype) and its structure's dict."""
    state, structure = fold_frontend(gated)
    pruned = WavLMFrontEnd(gated.config, structure=structure,
                           cnn_gradient_scale=gated.cnn_gradient_scale,
                           conv_output_scale=gated.conv_output_scale is not None,
                           pruned_norms=gated.pruned_norms)
    reference = next(iter(state.values()))
    pruned.to(device=reference.device, dtype=reference.dtype)
    pruned.load_state_dict(state, strict=True)
    return pruned.train(gated.training), structure.to_dict()
