"""pyannote-wavlm-prune: WavLM segmentation for pyannote.audio, pruned into small, fast models.

Public names are imported lazily, so that `pyannote-wavlm-prune simulate --help` does not pay
for importing torch, transformers and pyannote.audio.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "WavLMSegmentation": "pyannote_wavlm_prune.models.wavlm_segmentation",
    "save_checkpoint": "pyannote_wavlm_prune.models.checkpoint",
    "attach_gates": "pyannote_wavlm_prune.models.pruning",
    "prune": "pyannote_wavlm_prune.models.pruning",
    "Distill": "pyannote_wavlm_prune.tasks.distill_prune",
    "DistillPrune": "pyannote_wavlm_prune.tasks.distill_prune",
    "average_checkpoints": "pyannote_wavlm_prune.recipe.averaging",
    "Recipe": "pyannote_wavlm_prune.recipe.run",
    "export_pipeline": "pyannote_wavlm_prune.pipelines.export",
    "import_diarizen": "pyannote_wavlm_prune.importers.diarizen",
    "simulate": "pyannote_wavlm_prune.data.simulate",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyannote_wavlm_prune' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
