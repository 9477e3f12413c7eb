"""pyannote's SpeakerDiarization pipeline, usable offline with any clustering."""

from __future__ import annotations

from typing import Any

import numpy as np
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization


class NoPLDA(PLDA):
    """Stands in for the PLDA that pyannote 4.0.7 loads even when the clustering needs none.

    pyannote's default PLDA lives in a gated hub repository; clusterings other than VBx never
    call it, so this placeholder only raises if something does.
    """

    def __init__(self):  # no files to read
        self.lda_dimension = 0

    def __call__(self, embeddings: np.ndarray):
        raise RuntimeError("This pipeline has no PLDA: VBxClustering needs plda=... (a PLDA).")


class SpeakerDiarization(PyannoteSpeakerDiarization):
    """pyannote.audio's SpeakerDiarization pipeline, with `plda` optional

    Parameters are those of `pyannote.audio.pipelines.SpeakerDiarization`, except that
    `plda` defaults to None, which is accepted for every clustering but VBxClustering, and
    `clustering` defaults to "AgglomerativeClustering" (which needs no PLDA).
    """

    def __init__(
        self,
        segmentation: Any,
        embedding: Any = None,
        plda: Any = None,
        clustering: str = "AgglomerativeClustering",
        **kwargs,
    ):
        if plda is None:
            if clustering == "VBxClustering":
                raise ValueError("clustering='VBxClustering' needs plda=... (a PLDA or its directory).")
            plda = NoPLDA()
        super().__init__(
            segmentation=segmentation, embedding=embedding, plda=plda, clustering=clustering, **kwargs
        )
