"""pyannote-wavlm-prune: WavLM segmentation for pyannote.audio, pruned into small, fast models.

Public names are imported lazily, so that `pyannote-wavlm-prune simulate --help` does not pay
for importing torch, transformers and pyannote.audio.
"""

import sys
from collections.abc import Callable
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


def lazy_exports(package: str, exports: dict[str, str]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` of a package whose public names are imported on first use

    exports: {public name: the module that defines it}
    """
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(getattr(sys.modules[package], "__all__", exports))

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
