"""Builders shared by the tests (tiny models, task specifications)."""

from __future__ import annotations

from pyannote.audio.core.task import Problem, Resolution, Specifications

from pyannote_wavlm_prune import WavLMSegmentation
from pyannote_wavlm_prune.wavlm.presets import tiny_config

# a back end small enough for CPU tests
TINY_BACKEND = {
    "projection": {"dimension": 32},
    "conformer": {"num_layers": 1, "num_heads": 2, "ffn_dim": 64, "depthwise_conv_kernel_size": 7},
}


def powerset_specifications(duration: float = 2.0, num_speakers: int = 3) -> Specifications:
    """Specifications of pyannote's SpeakerDiarization task (powerset, <= 2 speakers/frame)."""
    return Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=duration,
        classes=[f"speaker#{i + 1}" for i in range(num_speakers)],
        powerset_max_classes=2,
        permutation_invariant=True,
    )


def tiny_model(family: str = "base", duration: float = 2.0, **kwargs) -> WavLMSegmentation:
    """A built (task-ready) tiny WavLMSegmentation in eval mode."""
    options = {"wavlm": tiny_config(family), **TINY_BACKEND, **kwargs}
    model = WavLMSegmentation(**options)
    model.specifications = powerset_specifications(duration)
    model.build()
    return model.eval()


# a pruned structure of tiny_config (2 layers, 4 heads, FFN 64, conv 7 x 32): about half of it
TINY_PRUNED_STRUCTURE = {
    "conv_channels": [16, 24, 8, 32, 12, 20, 32],
    "kept_heads": [[0, 2], [1]],
    "ffn_widths": [16, 40],
}
# fast pipelines: non-overlapping windows, embeddings computed in one batch
FAST_PIPELINE = {"segmentation_step": 1.0, "embedding_batch_size": 16}
