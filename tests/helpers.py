"""Builders shared by the tests (tiny models, task specifications), and rounding bounds."""

from __future__ import annotations

import numpy as np
import torch
from pyannote.audio.core.task import Problem, Resolution, Specifications
from wavlm_helpers import layout_config

from pyannote_wavlm_prune import WavLMSegmentation

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
    options = {"wavlm": layout_config(family), **TINY_BACKEND, **kwargs}
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


def random_wespeaker(duration: float = 2.0):
    """pyannote's WeSpeaker ResNet34 (the embedding of its hub pipelines and DiariZen's), random
    weights (seed 0), with the specifications a checkpoint needs; in eval mode."""
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = WeSpeakerResNet34()
    model.specifications = Specifications(problem=Problem.REPRESENTATION,
                                          resolution=Resolution.CHUNK, duration=duration)
    return model.eval()


def pyannote_s_own(pipeline):
    """pyannote 4's own SpeakerDiarization with the models, PLDA, clustering, windows, batches
    and instantiated parameters of `pipeline` (one of ours)

    The same segmentation and embedding models (as `pipeline` runs them), PLDA, clustering,
    segmentation step, `embedding_exclude_overlap`, batch sizes and instantiated parameters:
    given the same file, pyannote's class does the same arithmetic on pyannote's embedding path
    (one pass per (chunk, speaker) pair), so exactly the same output. It copies `pipeline`'s
    settings: a test of the settings themselves states them instead (tests/test_pipeline.py).
    """
    from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization

    counterpart = PyannoteSpeakerDiarization(
        segmentation=pipeline._segmentation.model, embedding=pipeline.embedding,
        plda=pipeline._plda, clustering=pipeline.klustering,
        segmentation_step=pipeline.segmentation_step,
        embedding_exclude_overlap=pipeline.embedding_exclude_overlap,
        segmentation_batch_size=pipeline.segmentation_batch_size,
        embedding_batch_size=pipeline.embedding_batch_size,
    )
    return counterpart.instantiate(pipeline.parameters(instantiated=True))


def assert_same_diarization(ours, theirs, duration: float | None = None,
                            embedding_rtol: float = 0.0) -> None:
    """Two pipeline outputs (DiarizeOutput) are equal, and not both empty

    duration: the file's, when pyannote's output (`theirs`) may run past its end (its last
    chunk is zero-padded); ours is cropped there, so theirs is compared cropped too.
    embedding_rtol: how far the speakers' embeddings may differ, relative to their largest
    magnitude (EMBEDDING_RTOL when ours come from the per-chunk path); 0, equal.
    """
    from pyannote.core import Segment

    def within(annotation):
        if duration is None:
            return annotation
        return annotation.crop(Segment(0.0, duration), mode="intersection")

    assert ours.speaker_diarization.get_timeline().duration() > 1.0  # seconds of speech
    assert ours.speaker_diarization == within(theirs.speaker_diarization)
    assert ours.exclusive_speaker_diarization == within(theirs.exclusive_speaker_diarization)
    # NaN rows count as equal (pyannote's VBx gives one speaker of a random model NaNs)
    scale = np.nanmax(np.abs(theirs.speaker_embeddings), initial=0.0)
    np.testing.assert_allclose(ours.speaker_embeddings, theirs.speaker_embeddings, rtol=0,
                               atol=embedding_rtol * scale)


# float32 embeddings of one chunk computed in batches of another shape (chunks instead of
# (chunk, speaker) pairs: other GEMM and convolution blockings): a few ulps of their scale
EMBEDDING_RTOL = 1e-5


def diarize(pipeline, file, **options):
    """(diarization, embeddings) of `file` (embeddings as the pipeline's hook sees them)."""
    output, seen = diarize_and_watch(pipeline, file, **options)
    return output.speaker_diarization, seen["embeddings"]


def diarize_and_watch(pipeline, file, **options):
    """(output, {step: artifact}) of `file`: what the pipeline gives and, of each step that
    reports to hooks (segmentation, embeddings, ...), its final artifact."""
    seen = {}

    def hook(step, artifact, file=None, total=None, completed=None):
        if total is None:  # per-batch progress calls carry no artifact
            seen[step] = artifact

    return pipeline({**file}, hook=hook, **options), seen


def count_frame_wise_passes(model):
    """Wrap `model.forward_frames`: a list that receives the batch size of each call."""
    calls = []
    forward_frames = model.forward_frames

    def counted(waveforms):
        calls.append(waveforms.shape[0])
        return forward_frames(waveforms)

    model.forward_frames = counted
    return calls


# Rounding differences per layer, in eps of the dtype times the output's magnitude (a layer of
# these small networks sums at most a few thousand terms): measured up to 0.3 in float32
# (another machine, process or ONNX Runtime) and 1.1 in float64 (pruned again with soft
# gates), so 4 leaves room for other machines and releases.
ULPS_PER_LAYER = 4


def network_depth(model) -> int:
    """Layers a signal passes in sequence through a WavLMSegmentation or a WavLM front end

    The CNN's layers, the feature projection, the positional convolution, two blocks
    (attention, FFN) per transformer layer; for a WavLMSegmentation, also the projection,
    four blocks per Conformer layer (two half FFNs, attention, convolution), the classifier.
    """
    frontend = getattr(model, "frontend", model)
    wavlm = frontend.wavlm
    depth = len(wavlm.feature_extractor.conv_layers) + 2 + 2 * len(wavlm.encoder.layers)
    if frontend is not model:
        depth += 2 + 4 * len(model.conformer.conformer_layers)
    return depth


def rounding_bound(reference: torch.Tensor | list[torch.Tensor], depth: int) -> float:
    """The most two computations of `reference` can differ by when only their rounding differs
    (summation order, kernels, machine, library release): ULPS_PER_LAYER eps of its dtype
    times its largest magnitude, for each of the `depth` layers it went through."""
    tensors = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    magnitude = max(tensor.abs().max().item() for tensor in tensors)
    eps = torch.finfo(tensors[0].dtype).eps
    return ULPS_PER_LAYER * depth * eps * magnitude


def save_as_pyannote_3_1(model, path):
    """`model` written the way pyannote.audio 3.1 wrote the models of its hub repositories
    (pyannote/segmentation-3.0, pyannote/wespeaker-voxceleb-resnet34-LM): the hub files' keys,
    and the "pyannote.audio" block of 3.1's `Model.on_save_checkpoint`, which held
    `torch.__version__` (a TorchVersion, not a str). tests/test_safe_loading.py checks this
    writer against the real segmentation-3.0 file (tests/data/pyannote-segmentation-3.0)."""
    import lightning
    import torch

    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": model.state_dict(),
        "hparams_name": "kwargs",
        "hyper_parameters": dict(model.hparams),
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.0"},
            "architecture": {"module": type(model).__module__, "class": type(model).__name__},
            "specifications": model.specifications,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def lay_out_hub_cache(cache, repo_id: str, files: dict, commit: str = "0" * 40):
    """`files` ({name: local file}) laid out in `cache` as huggingface_hub lays out a
    downloaded model repository: blobs named by their sha256, a snapshot of links to them, and
    refs/main naming the snapshot's commit. Returns the snapshot directory."""
    import hashlib
    import os
    import shutil
    from pathlib import Path

    repository = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repository / "snapshots" / commit
    (repository / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = repository / "blobs" / hashlib.sha256(Path(source).read_bytes()).hexdigest()
        shutil.copyfile(source, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repository / "refs").mkdir(exist_ok=True)
    (repository / "refs" / "main").write_text(commit)
    return snapshot
