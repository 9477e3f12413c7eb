import os

# before anything imports pyannote or huggingface_hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PYANNOTE_METRICS_ENABLED"] = "0"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """Root of the project's tiny simulated corpus (built once per test session)."""
    from pyannote_wavlm_prune.data.simulate import build_tiny_corpus

    root = tmp_path_factory.mktemp("tiny_corpus")
    build_tiny_corpus(root)
    return root


@pytest.fixture(scope="session")
def tiny_protocol(tiny_corpus):
    """A pyannote SpeakerDiarization protocol on the tiny simulated corpus."""
    from pyannote_wavlm_prune.data.simulate import get_protocol

    return get_protocol(tiny_corpus)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
