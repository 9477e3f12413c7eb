"""OnnxSegmentation: a pyannote Model whose forward runs an ONNX graph with ONNX Runtime.

Its checkpoint is a standard pyannote checkpoint (module and class named in the
"pyannote.audio" block, task specifications) that carries the ONNX graph itself (bytes, under
the checkpoint's "onnx" key) and what pyannote needs to slide it over a file (the CNN's
kernels and strides: number of frames and receptive field). So `Model.from_pretrained`,
pyannote's `Inference` and the `SpeakerDiarization` pipeline use it as any other
segmentation model, and a pipeline directory whose `segmentation/pytorch_model.bin` is one
loads with `Pipeline.from_pretrained` offline, torch doing no segmentation.

The module path `pyannote_wavlm_prune.deploy.model.OnnxSegmentation` is written in such
checkpoints: a public interface, never move it without a shim.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from pyannote.audio.core.model import Model
from pyannote.audio.core.task import Task

from .onnx import (
    OnnxMismatchError,
    Sessions,
    default_tolerance,
    inference_session,
    read_graph,
    reference_copy,
    require,
    seal,
    unseal,
)
from .segmentation import (
    FP32_TOLERANCE,
    INPUT_NAME,
    INT8_TOLERANCE,
    OUTPUT_NAME,
    OnnxExport,
    check_inputs,
    check_segmentation,
    compare,
    export_onnx,
    min_samples,
    run_session,
)

CHECKPOINT_KEY = "onnx"


class OnnxSegmentation(Model):
    """A segmentation model computed by ONNX Runtime from an exported graph

    ONNX graph (waveform (batch, 1, samples) > log-probabilities (batch, frames, classes))

    Build one with `OnnxSegmentation.from_model(model)` (export) or
    `OnnxSegmentation.from_onnx(file, model)` (an existing .onnx file, checked against the
    model it was exported from); save it with `save_checkpoint`.

    Parameters
    ----------
    conv_kernel, conv_stride : sequence of int
        Kernels and strides of the CNN of the exported model (WavLM: (10, 3, 3, 3, 3, 2, 2)
        and (5, 2, 2, 2, 2, 2, 2)): they give the number of frames and the receptive field.
    int8 : bool, optional
        Whether the graph is int8-quantised (informative). Defaults to False.
    max_abs_diff : float, optional
        Difference with the torch model measured on export (informative).
    num_threads : int, optional
        ONNX Runtime intra-op threads. Defaults to torch's number of threads at the first call.
    source : dict, optional
        What the graph was exported from (class, WavLM structure), informative.
    sample_rate : int, optional
        Defaults to 16000.
    num_channels : int, optional
        Defaults to 1.
    task : Task, optional
    """

    def __init__(
        self,
        conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
        conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
        int8: bool = False,
        max_abs_diff: float | None = None,
        num_threads: int | None = None,
        source: dict | None = None,
        sample_rate: int = 16000,
        num_channels: int = 1,
        task: Task | None = None,
    ):
        if len(conv_kernel) != len(conv_stride) or not conv_kernel:
            raise ValueError(
                f"conv_kernel={list(conv_kernel)} and conv_stride={list(conv_stride)}: expected "
                "two non-empty lists of the same length."
            )
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("conv_kernel", "conv_stride", "int8", "max_abs_diff",
                                  "num_threads", "source")
        self.hparams.conv_kernel = [int(k) for k in conv_kernel]
        self.hparams.conv_stride = [int(s) for s in conv_stride]
        self.onnx_model: bytes | None = None
        self._sessions = Sessions()

    # --- building -------------------------------------------------------------------------

    @classmethod
    def _like(cls, model, export: OnnxExport) -> OnnxSegmentation:
        config = model.frontend.config
        structure = None if model.structure is None else model.structure.to_dict()
        source = {"class": f"{type(model).__module__}.{type(model).__name__}",
                  "structure": structure}
        onnx_model = cls(
            conv_kernel=config.conv_kernel, conv_stride=config.conv_stride, int8=export.int8,
            max_abs_diff=export.max_abs_diff, source=source,
            sample_rate=model.hparams.sample_rate, num_channels=model.hparams.num_channels,
        )
        onnx_model.specifications = model.specifications
        onnx_model.onnx_model = export.onnx
        return onnx_model.eval()

    @classmethod
    def from_model(cls, model, int8: bool = False, tolerance: float | None = None,
                   **kwargs) -> OnnxSegmentation:
        """Export `model` (a WavLMSegmentation) and wrap the checked graph (see export_onnx)."""
        return cls._like(model, export_onnx(model, int8=int8, tolerance=tolerance, **kwargs))

    @classmethod
    def from_onnx(cls, onnx_file: str | os.PathLike | bytes, model, int8: bool = False,
                  tolerance: float | None = None) -> OnnxSegmentation:
        """Wrap an existing ONNX graph, after checking it computes what `model` computes

        Parameters
        ----------
        onnx_file : path or bytes
            Graph written by `export_onnx` (or the export-onnx command) from `model`.
        model : WavLMSegmentation
            The model it was exported from.
        int8 : bool, optional
            Whether the graph is int8: the check is then on probabilities (tolerance 0.1 by
            default) instead of log-probabilities (1e-4).

        Raises
        ------
        OnnxMismatchError
            If the graph's inputs, outputs or numbers do not match `model`'s, naming the file.
        """
        check_segmentation(model)
        name = "ONNX graph" if isinstance(onnx_file, bytes) else f"ONNX file {onnx_file}"
        graph = (unseal(onnx_file, name, warn=False) if isinstance(onnx_file, bytes)
                 else read_graph(onnx_file))
        tolerance = default_tolerance(tolerance, int8, FP32_TOLERANCE, INT8_TOLERANCE)
        try:
            session = inference_session(graph)
        except ImportError:
            raise
        except Exception as error:
            raise OnnxMismatchError(f"{name} cannot be read by ONNX Runtime: {error}") from error
        _check_signature(session, name)
        reference = reference_copy(model)
        inputs = check_inputs(reference)
        try:
            log_diff, probability_diff = compare(session, reference, inputs)
        except OnnxMismatchError as error:
            raise OnnxMismatchError(f"{name} does not match the model: {error}") from error
        except Exception as error:  # onnxruntime's own errors (wrong shapes inside the graph)
            raise OnnxMismatchError(
                f"{name} fails on the model's inputs {[tuple(x.shape) for x in inputs]}: "
                f"{error}"
            ) from error
        measured = probability_diff if int8 else log_diff
        if not measured <= tolerance:
            raise OnnxMismatchError(
                f"{name} does not match the model: its output differs by {measured:.3g} (max "
                f"abs, {'probabilities' if int8 else 'log-probabilities'}), expected at most "
                f"{tolerance:g}. Was it exported from this checkpoint?"
            )
        export = OnnxExport(onnx=graph, int8=int8, opset=0, max_abs_diff=log_diff,
                            max_probability_diff=probability_diff, tolerance=tolerance,
                            checked_shapes=[tuple(x.shape) for x in inputs])
        return cls._like(model, export)

    # --- checkpoints ----------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.onnx_model is None:
            raise ValueError("This OnnxSegmentation holds no ONNX graph: nothing to save.")
        super().on_save_checkpoint(checkpoint)
        # the graph carries its digest, checked when the checkpoint loads
        checkpoint[CHECKPOINT_KEY] = {"model": seal(self.onnx_model)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY)
        if not isinstance(stored, dict) or not isinstance(stored.get("model"), bytes):
            raise ValueError(
                f"checkpoint has no '{CHECKPOINT_KEY}' entry with the graph's bytes: expected "
                "a checkpoint written by save_checkpoint(OnnxSegmentation(...))."
            )
        super().on_load_checkpoint(checkpoint)
        # before any ONNX Runtime session sees it
        self.onnx_model = unseal(stored["model"], "the ONNX graph of this checkpoint")
        self._sessions = Sessions()

    # --- pyannote Model interface ---------------------------------------------------------

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for `num_samples` input samples (0 if too short)."""
        for kernel, stride in zip(self.hparams.conv_kernel, self.hparams.conv_stride):
            num_samples = (num_samples - kernel) // stride + 1 if num_samples >= kernel else 0
        return num_samples

    def receptive_field_size(self, num_frames: int = 1) -> int:
        """Number of input samples seen by `num_frames` consecutive output frames."""
        size = num_frames
        for kernel, stride in zip(reversed(self.hparams.conv_kernel),
                                  reversed(self.hparams.conv_stride)):
            size = (size - 1) * stride + kernel
        return size

    def receptive_field_center(self, frame: int = 0) -> float:
        """Index (possibly half-integer) of the input sample at the centre of `frame`'s field."""
        step = self.receptive_field_size(2) - self.receptive_field_size(1)
        return frame * step + (self.receptive_field_size(1) - 1) / 2

    def session(self, device: torch.device | str = "cpu"):
        """The ONNX Runtime session that runs on `device` (created on first use)."""
        if self.onnx_model is None:
            raise ValueError("This OnnxSegmentation holds no ONNX graph: build it with "
                             "from_model() or from_onnx(), or load its checkpoint.")
        return self._sessions.get(self.onnx_model, device, self.hparams.num_threads)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Frame-wise (powerset) log-probabilities, computed by ONNX Runtime

        waveforms (Tensor): shape (batch, 1, samples), 16 kHz, at least 720 samples
        returns (Tensor): shape (batch, frames, classes), on waveforms' device
        """
        if waveforms.dim() != 3 or waveforms.shape[1] != 1:
            raise ValueError(
                f"waveforms has shape {tuple(waveforms.shape)}: expected (batch, 1, samples)."
            )
        if waveforms.shape[-1] < min_samples(self):
            raise ValueError(
                f"waveforms has {waveforms.shape[-1]} samples: the ONNX graph needs at least "
                f"{min_samples(self)} (two frames)."
            )
        return run_session(self.session(waveforms.device), waveforms)


def _check_signature(session, name: str) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise OnnxMismatchError(
            f"{name} has inputs {inputs} and outputs {outputs}: expected input "
            f"['{INPUT_NAME}'] and output '{OUTPUT_NAME}' (a graph written by export_onnx)."
        )


__all__ = ["OnnxSegmentation", "require"]
