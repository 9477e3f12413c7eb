"""Simulated-conversation corpora written as pyannote.database protocols."""

from .protocols import get_protocol
from .simulate import (
    PRESETS,
    SimulationConfig,
    Simulator,
    build_tiny_corpus,
    main_simulate,
    simulate,
)

__all__ = [
    "PRESETS",
    "SimulationConfig",
    "Simulator",
    "build_tiny_corpus",
    "get_protocol",
    "main_simulate",
    "simulate",
]
