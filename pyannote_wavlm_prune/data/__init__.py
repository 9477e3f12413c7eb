"""Simulated-conversation corpora written as pyannote.database protocols."""

from .simulate import (
    PRESETS,
    SimulationConfig,
    Simulator,
    build_tiny_corpus,
    get_protocol,
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
