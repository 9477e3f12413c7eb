"""Deprecated: `pyannote_wavlm_prune.frontends`, under the name it had while it held WavLM only.

The package now holds WavLM, HuBERT and wav2vec 2.0 front ends and was renamed for what it
holds. User code and stored objects that name `pyannote_wavlm_prune.wavlm` or one of its
modules (`pyannote_wavlm_prune.wavlm.frontend`, `.units.conv`...) keep working: each name is
the very module of `frontends` (registered in `sys.modules` on first import, so classes,
isinstance checks and pickles are the same), and importing this package says so once with a
DeprecationWarning.
"""

import importlib
import pkgutil
import sys
import warnings

from .. import frontends
from ..frontends import *  # noqa: F403  (the public names, as they were)
from ..frontends import __all__  # noqa: F401

warnings.warn("pyannote_wavlm_prune.wavlm is deprecated: import pyannote_wavlm_prune.frontends "
              "(the same modules, renamed for the WavLM, HuBERT and wav2vec 2.0 front ends it "
              "holds).", DeprecationWarning, stacklevel=2)


def _alias(package) -> None:
    """Register every module under `package` under this package's name too (recursively)."""
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        alias = __name__ + module.__name__[len(frontends.__name__):]
        sys.modules[alias] = module
        parent = sys.modules[alias.rpartition(".")[0]]
        setattr(parent, info.name, module)
        if info.ispkg:
            _alias(module)


_alias(frontends)
