"""The shape of the package: no import cycle, and checkpoints of earlier versions still load."""

import ast
import subprocess
import sys
from pathlib import Path

import torch

import pyannote_wavlm_prune

PACKAGE = Path(pyannote_wavlm_prune.__file__).parent
DATA = Path(__file__).parent / "data"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that `path` imports at run time (anywhere in the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = {id(child) for node in ast.walk(tree) if isinstance(node, ast.If)
               and _is_type_checking(node) for child in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import submodule` imports the submodule
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def test_the_package_has_no_import_cycle():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {_module_name(path): _imports(path, modules) for path in paths}
    assert len(graph) > 40 and graph["pyannote_wavlm_prune.wavlm.cost"]  # the parse saw imports

    visiting, done, cycles = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
            return
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


def test_a_checkpoint_of_version_0_1_0_loads_and_gives_its_recorded_outputs():
    """tests/data: a tiny pruned Large-family model (pruned CNN layer norms and feature
    projection, a removed attention block) saved by commit 629af64, and its outputs."""
    script = f"""
import torch
from helpers import network_depth, rounding_bound
from pyannote.audio import Model
model = Model.from_pretrained({str(DATA / 'old-format-large-pruned.ckpt')!r}).eval()
recorded = torch.load({str(DATA / 'old-format-large-pruned.outputs.pt')!r})
with torch.no_grad():
    outputs = model(recorded["waveforms"])
print(type(model).__name__, model.structure.kept_heads, model.structure.attention_layers)
print((outputs - recorded["outputs"]).abs().max().item())
print(rounding_bound(recorded["outputs"], network_depth(model)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=True, cwd=Path(__file__).parent)
    description, difference, bound = result.stdout.strip().splitlines()[-3:]
    assert description == "WavLMSegmentation ((0, 1, 2), ()) (True, False)"
    # float32 outputs recorded on another machine and release: equal up to rounding
    assert float(difference) <= float(bound)


def test_the_recorded_outputs_are_log_probabilities_of_7_powerset_classes():
    recorded = torch.load(DATA / "old-format-large-pruned.outputs.pt")
    assert recorded["outputs"].shape == (2, 49, 7)
    assert torch.allclose(recorded["outputs"].exp().sum(-1), torch.ones(2, 49), atol=1e-5)
