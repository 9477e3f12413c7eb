"""Protocols: the one loader, and simulated-conversation corpora written as protocols.

    config.py      SimulationConfig and its presets
    conversation.py, acoustics.py, voices.py, folder.py   speakers, turns, rooms, noise
    simulate.py    the simulator and the corpus writer (database.yml, lists, RTTM, UEM, WAV)
    protocols.py   get_protocol: any database.yml, a fresh registry per call
"""

from .config import PRESETS, SimulationConfig
from .protocols import get_protocol
from .simulate import Simulator, build_tiny_corpus, simulate

__all__ = [
    "PRESETS",
    "SimulationConfig",
    "Simulator",
    "build_tiny_corpus",
    "get_protocol",
    "simulate",
]
