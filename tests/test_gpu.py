"""On a GPU: pipelines of every segmentation runtime diarize as on CPU (skipped without one).

CI has no GPU: these run where one is lent (see docs/deployment.md), e.g.
`python -m pytest tests/test_gpu.py`.
"""

import pytest
import torch
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import tiny_model
from pyannote.metrics.diarization import DiarizationErrorRate

from pyannote_wavlm_prune.deploy import OnnxSegmentation
from pyannote_wavlm_prune.pipelines import SpeakerDiarization
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.segmentation_bench import pyannote_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


@pytest.fixture(scope="module")
def sample():
    return pyannote_sample()  # read without an audio decoder


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    pruned = tiny_model(duration=5.0, structure=PRUNED)
    return {"pruned": pruned, "onnx": OnnxSegmentation.from_model(pruned),
            "embedding": untrained_embedding(dimension=32)}


@pytest.mark.parametrize("runtime", [None, "torch", "torch-int8", "onnxruntime",
                                     "onnxruntime-int8"])
def test_pipeline_on_gpu_diarizes_as_on_cpu(models, sample, runtime):
    segmentation = models["onnx"] if runtime and runtime.startswith("onnx") else models["pruned"]

    def pipeline():
        built = SpeakerDiarization(segmentation=segmentation, embedding=models["embedding"],
                                   segmentation_runtime=runtime, **FAST)
        return built.instantiate(AGGLOMERATIVE)

    expected = pipeline()(sample).speaker_diarization
    on_gpu = pipeline().to(torch.device("cuda"))
    assert on_gpu.device.type == "cuda"
    # speaker embeddings once per chunk, on the GPU too
    assert on_gpu.embedding_path == "per-chunk"
    actual = on_gpu(sample).speaker_diarization
    assert len(expected.labels()) >= 1 and expected.get_timeline().duration() > 5.0
    # float rounding differs between devices: at most 1 % of the speech moves
    assert DiarizationErrorRate()(expected, actual) <= 0.01
