"""pyannote-wavlm-prune: WavLM segmentation for pyannote.audio, pruned into small, fast models."""

from .checkpoint import save_checkpoint
from .models import WavLMSegmentation

__version__ = "0.1.0"

__all__ = ["WavLMSegmentation", "save_checkpoint", "__version__"]
