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


@pytest.fixture(autouse=True, scope="module")
def _module_seed():
    """Each module starts from the same random state, whatever ran before it in the process
    (a module-scoped fixture, e.g. a model trained a few steps, is built before `_seed` runs;
    Lightning's seed_everything leaves PL_GLOBAL_SEED behind, which pyannote's training
    data order reads): so a module gives the same results alone, in the suite, or in any
    test worker."""
    import random

    import numpy as np

    os.environ.pop("PL_GLOBAL_SEED", None)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
