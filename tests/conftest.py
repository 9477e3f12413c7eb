import os

# before anything imports pyannote or huggingface_hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_protocol(tmp_path_factory):
    """A pyannote SpeakerDiarization protocol on the project's tiny simulated corpus."""
    from pyannote_wavlm_prune.data.simulate import build_tiny_corpus

    return build_tiny_corpus(tmp_path_factory.mktemp("tiny_corpus"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
