"""WavLM on top of transformers: front end, hard-concrete gates, cost model, structured pruning.

No pyannote import here: these pieces work on a `WavLMFrontEnd` alone.
"""

from .attention import PrunedWavLMAttention
from .cost import (
    expected_macs,
    expected_params,
    expected_sparsity,
    structure_macs,
    structure_params,
)
from .frontend import WavLMFrontEnd
from .gates import HardConcreteGate
from .gating import (
    UNITS,
    attach_frontend_gates,
    deterministic_masks,
    gate_units,
    is_gated,
    remove_frontend_gates,
)
from .pruning import build_structured_wavlm, prune_frontend, structure_from_gates
from .structure import REFERENCE_BASE_PLUS_S80, full_structure, validate_structure

__all__ = [
    "HardConcreteGate",
    "PrunedWavLMAttention",
    "REFERENCE_BASE_PLUS_S80",
    "UNITS",
    "WavLMFrontEnd",
    "attach_frontend_gates",
    "build_structured_wavlm",
    "deterministic_masks",
    "expected_macs",
    "expected_params",
    "expected_sparsity",
    "full_structure",
    "gate_units",
    "is_gated",
    "prune_frontend",
    "remove_frontend_gates",
    "structure_from_gates",
    "structure_macs",
    "structure_params",
    "validate_structure",
]
