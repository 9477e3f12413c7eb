from .wavlm_segmentation import WavLMSegmentation

__all__ = ["WavLMSegmentation"]
