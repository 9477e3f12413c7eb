"""The README's tour of the API runs as written."""

import os
import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_api_tour_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "the README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    pruned = namespace["pruned"]
    assert set(pruned.structure.to_dict()) >= {"conv_channels", "kept_heads", "ffn_widths"}
    assert os.path.isfile(tmp_path / "pruned.ckpt")
    # the published structure was instantiated at its size
    small = namespace["small"]
    assert 18.8e6 < sum(p.numel() for p in small.frontend.parameters()) < 19.0e6
