"""A PLDA for VBx clustering, estimated from the project's own labelled speech.

pyannote's VBxClustering needs a PLDA: an x-vector transform (centering, length
normalisation, LDA) and a PLDA model in the transformed space, read from two files by
`pyannote.audio.utils.vbx.vbx_setup`:

- xvec_transform.npz: mean1 (D,), lda (D, d), mean2 (d,)
  x -> sqrt(d) * l2norm(lda.T (sqrt(D) * l2norm(x - mean1)) - mean2)
- plda.npz: mu (d,), tr (d, d), psi (d,)
  z -> tr (z - mu), in which the within-speaker covariance is the identity and the
  between-speaker covariance is diag(psi).

pyannote's own files live in a gated hub repository; `estimate_plda` writes equivalent
files from labelled embeddings (two-covariance model, moment estimates), and
`speaker_embeddings` extracts such embeddings from annotated files.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyannote.audio.core.plda import PLDA
from scipy.linalg import eigh

from ..models.loading import load_model

TRANSFORM_FILE = "xvec_transform.npz"
PLDA_FILE = "plda.npz"

# relative ridge added to covariance matrices, so that eigh(B, W) stays well posed
_RIDGE = 1e-6


class StoredPLDA(PLDA):
    """A pyannote PLDA that keeps the arrays of its two files, so that it can be saved again

    Parameters
    ----------
    transform : dict
        Arrays of xvec_transform.npz: "mean1", "lda", "mean2".
    plda : dict
        Arrays of plda.npz: "mu", "tr", "psi".
    lda_dimension : int, optional
        Dimension of the PLDA space used by VBx. Defaults to all of it (lda.shape[1]).
    """

    def __init__(
        self,
        transform: Mapping[str, np.ndarray],
        plda: Mapping[str, np.ndarray],
        lda_dimension: int | None = None,
    ):
        self.arrays = {
            TRANSFORM_FILE: {k: np.asarray(transform[k]) for k in ("mean1", "lda", "mean2")},
            PLDA_FILE: {k: np.asarray(plda[k]) for k in ("mu", "tr", "psi")},
        }
        dimension = self.arrays[TRANSFORM_FILE]["lda"].shape[1]
        # pyannote's PLDA reads files: write them to a scratch folder, read, forget
        with tempfile.TemporaryDirectory() as scratch:
            self._write(Path(scratch))
            super().__init__(
                Path(scratch) / TRANSFORM_FILE,
                Path(scratch) / PLDA_FILE,
                lda_dimension=dimension if lda_dimension is None else lda_dimension,
            )

    @property
    def dimension(self) -> int:
        """Dimension of the PLDA space (that of the LDA)."""
        return int(self.arrays[TRANSFORM_FILE]["lda"].shape[1])

    @property
    def embedding_dimension(self) -> int:
        """Dimension of the speaker embeddings it transforms."""
        return int(self.arrays[TRANSFORM_FILE]["lda"].shape[0])

    def _write(self, directory: Path):
        for name, arrays in self.arrays.items():
            np.savez(directory / name, **arrays)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write xvec_transform.npz and plda.npz into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._write(directory)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, lda_dimension: int | None = None) -> StoredPLDA:
        """Read the PLDA written in `directory` (by `save` or by pyannote)."""
        directory = Path(directory)
        missing = [n for n in (TRANSFORM_FILE, PLDA_FILE) if not (directory / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"PLDA directory {directory} lacks {', '.join(missing)}: expected "
                f"{TRANSFORM_FILE} and {PLDA_FILE}."
            )
        with np.load(directory / TRANSFORM_FILE) as transform:
            transform = dict(transform)
        with np.load(directory / PLDA_FILE) as plda:
            plda = dict(plda)
        return cls(transform, plda, lda_dimension=lda_dimension)


def _length_normalise(x: np.ndarray, scale: float) -> np.ndarray:
    return scale * x / np.linalg.norm(x, axis=1, keepdims=True)


def _scatter(x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-class and between-class covariances of x (n, D), each sample weighing the same."""
    num_samples, dimension = x.shape
    mean = x.mean(axis=0)
    within = np.zeros((dimension, dimension))
    between = np.zeros((dimension, dimension))
    for k in np.unique(classes):
        members = x[classes == k]
        class_mean = members.mean(axis=0)
        centred = members - class_mean
        within += centred.T @ centred
        offset = (class_mean - mean)[:, None]
        between += len(members) * (offset @ offset.T)
    return within / num_samples, between / num_samples


def _ridge(covariance: np.ndarray) -> np.ndarray:
    dimension = covariance.shape[0]
    scale = max(np.trace(covariance) / dimension, 1e-12)
    return covariance + _RIDGE * scale * np.eye(dimension)


def estimate_plda(
    embeddings: np.ndarray,
    labels: Sequence[Any],
    lda_dimension: int | None = None,
    directory: str | os.PathLike | None = None,
) -> StoredPLDA:
    """Estimate the x-vector transform and PLDA that VBxClustering needs

    Parameters
    ----------
    embeddings : (num_embeddings, dimension) array
        Speaker embeddings (one per speech segment).
    labels : sequence of num_embeddings hashables
        Speaker of each embedding.
    lda_dimension : int, optional
        Dimension kept by the LDA (the PLDA space). At most min(dimension, num_speakers - 1),
        as LDA finds no more discriminant directions than that; defaults to that bound
        capped at 128 (pyannote's value).
    directory : path, optional
        Where to write xvec_transform.npz and plda.npz (pyannote's format).

    Returns
    -------
    plda : StoredPLDA
        A pyannote PLDA: pass it as `plda=` to the pipeline, or to `export_pipeline`.

    Notes
    -----
    Two-covariance model with moment estimates: after the x-vector transform, the
    within-speaker (W) and between-speaker (B) covariances are simultaneously diagonalised
    (generalised eigenproblem B v = psi W v), so that W becomes the identity and B becomes
    diag(psi), which is the model VBx assumes.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings has shape {embeddings.shape}: expected (num_embeddings, dimension)."
        )
    num_embeddings, dimension = embeddings.shape
    if len(labels) != num_embeddings:
        raise ValueError(
            f"{len(labels)} labels for {num_embeddings} embeddings: expected one label each."
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or infinite values: expected finite values.")
    _, classes, counts = np.unique(np.asarray(labels, dtype=object).astype(str),
                                   return_inverse=True, return_counts=True)
    num_speakers = len(counts)
    if num_speakers < 2:
        raise ValueError(f"{num_speakers} speaker in labels: a PLDA needs at least 2.")
    if np.all(counts < 2):
        raise ValueError("every speaker has a single embedding: within-speaker "
                         "variability cannot be estimated (expected >= 2 for some).")
    largest = min(dimension, num_speakers - 1)
    if lda_dimension is None:
        lda_dimension = min(largest, 128)
    if not 1 <= lda_dimension <= largest:
        raise ValueError(
            f"lda_dimension={lda_dimension}: expected 1 <= lda_dimension <= {largest} "
            f"(min of the embedding dimension {dimension} and num_speakers - 1 = "
            f"{num_speakers - 1})."
        )

    # x-vector transform: centre, length-normalise, LDA, centre, length-normalise
    mean1 = embeddings.mean(axis=0)
    x = _length_normalise(embeddings - mean1, np.sqrt(dimension))
    within, between = _scatter(x, classes)
    _, vectors = eigh(_ridge(between), _ridge(within))
    lda = vectors[:, ::-1][:, :lda_dimension]  # most discriminant directions first
    y = x @ lda
    mean2 = y.mean(axis=0)
    z = _length_normalise(y - mean2, np.sqrt(lda_dimension))

    # PLDA: within-speaker covariance -> identity, between-speaker -> diag(psi)
    mu = z.mean(axis=0)
    within, between = _scatter(z, classes)
    psi, vectors = eigh(_ridge(between), _ridge(within))
    order = np.argsort(psi)[::-1]
    psi = np.maximum(psi[order], _RIDGE)  # vbx_setup divides by psi
    tr = vectors[:, order].T

    plda = StoredPLDA(
        {"mean1": mean1, "lda": lda, "mean2": mean2},
        {"mu": mu, "tr": tr, "psi": psi},
    )
    if directory is not None:
        plda.save(directory)
    return plda


def speaker_embeddings(
    embedding: Any,
    files: Iterable[Mapping],
    duration: float = 2.0,
    min_duration: float = 0.5,
    labels_per_file: bool | None = None,
    batch_size: int = 32,
) -> tuple[np.ndarray, list[str]]:
    """Embeddings of single-speaker speech in annotated files, with their speaker labels

    Each speaker's speech without overlap is cut into consecutive windows of `duration`
    seconds (the last one of a region shorter: the longest multiple of `min_duration` that
    fits, dropped when none does) and embedded.

    Parameters
    ----------
    embedding : Model, str or dict
        pyannote speaker embedding model (or its checkpoint).
    files : iterable of dict
        Files with "annotation" (and "audio" or "waveform"), e.g. `protocol.train()`.
    duration, min_duration : float, optional
        Window length and shortest window kept, in seconds. Defaults to 2.0 and 0.5.
    labels_per_file : bool, optional
        Label speakers "uri/label" (labels only identify speakers within a file) or "label"
        (across the corpus). Defaults to what each file's "scope" says (pyannote.database:
        "file" means per file), and to per file when it says nothing.
    batch_size : int, optional
        Windows embedded at once. Defaults to 32.

    Returns
    -------
    embeddings : (num_windows, dimension) array
    labels : list of num_windows str
    """
    if not 0 < min_duration <= duration:
        raise ValueError(
            f"min_duration={min_duration}, duration={duration}: expected 0 < min_duration "
            "<= duration."
        )
    model = load_model(embedding, "embedding", strict=False).eval()
    sample_rate = model.hparams.sample_rate
    # windows grouped by length, so that each batch stacks into one tensor
    windows: dict[int, list[torch.Tensor]] = defaultdict(list)
    owners: dict[int, list[str]] = defaultdict(list)
    for file in files:
        annotation = file["annotation"]
        if labels_per_file is None:
            per_file = file.get("scope", "file") == "file"
        else:
            per_file = labels_per_file
        waveform, _ = model.audio(file)  # whole file, resampled and downmixed once
        overlap = annotation.get_overlap()
        for label in annotation.labels():
            alone = annotation.label_timeline(label).support().extrude(overlap)
            for region in alone:
                start = region.start
                while region.end - start >= min_duration:
                    # lengths are multiples of min_duration: few distinct lengths, few batches
                    left = region.end - start
                    length = min(duration, min_duration * math.floor(left / min_duration + 1e-9))
                    end = start + length
                    first = round(start * sample_rate)
                    num_samples = round(length * sample_rate)
                    chunk = waveform[:, first : first + num_samples]
                    if chunk.shape[1] == num_samples:  # annotation may exceed the audio
                        windows[num_samples].append(chunk)
                        owners[num_samples].append(
                            f"{file['uri']}/{label}" if per_file else str(label)
                        )
                    start = end
    if not windows:
        raise ValueError(
            f"no single-speaker speech of at least {min_duration} s in these files: "
            "expected annotated files with speech."
        )
    vectors, labels = [], []
    with torch.inference_mode():
        for num_samples, chunks in windows.items():
            for index in range(0, len(chunks), batch_size):
                batch = torch.stack(chunks[index : index + batch_size]).to(model.device)
                vectors.append(model(batch).cpu().numpy())
            labels.extend(owners[num_samples])
    return np.concatenate(vectors).astype(np.float64), labels
