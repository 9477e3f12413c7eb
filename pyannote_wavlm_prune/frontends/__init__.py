"""Self-supervised front ends (WavLM, HuBERT, wav2vec 2.0) on top of transformers: the front
end, hard-concrete gates, cost model, structured pruning.

What differs between the three families is `architectures.py`'s; the package was named
`wavlm` while it held WavLM only, and that name still imports (`pyannote_wavlm_prune.wavlm`,
deprecated). No pyannote import here: these pieces work on a `WavLMFrontEnd` alone. Each prunable unit
kind lives in one module of `units/`; gating, the cost model and folding iterate over them.
"""

from .attention import PrunedWavLMAttention
from .cost import expected_macs, expected_params, expected_sparsity, pruned_sparsity
from .folding import build_structured_wavlm, fold_frontend
from .frontend import WavLMFrontEnd
from .gates import HardConcreteGate
from .gating import (
    attach_frontend_gates,
    deterministic_masks,
    gate_units,
    is_gated,
    kept_structure,
    remove_frontend_gates,
)
from .published import REFERENCE_BASE_PLUS_S80
from .structure import Structure
from .units import DEFAULT_UNITS, UNIT_KINDS, UNITS, EmptyLayerError

__all__ = [
    "DEFAULT_UNITS",
    "EmptyLayerError",
    "HardConcreteGate",
    "PrunedWavLMAttention",
    "REFERENCE_BASE_PLUS_S80",
    "Structure",
    "UNITS",
    "UNIT_KINDS",
    "WavLMFrontEnd",
    "attach_frontend_gates",
    "build_structured_wavlm",
    "deterministic_masks",
    "expected_macs",
    "expected_params",
    "expected_sparsity",
    "fold_frontend",
    "gate_units",
    "is_gated",
    "kept_structure",
    "pruned_sparsity",
    "remove_frontend_gates",
]
