"""The shape of the package as docs/architecture.md states it (every module named, imports
flowing down its layers, no cycle), documents that exist, and old checkpoints that still load."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyannote_wavlm_prune

PACKAGE = Path(pyannote_wavlm_prune.__file__).parent
ROOT = PACKAGE.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DATA = Path(__file__).parent / "data"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, modules: set[str], type_checking: bool = False) -> set[str]:
    """Modules of the package that `path` imports at run time (anywhere in the file, functions
    included); with `type_checking`, those imported for type checkers only as well."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = set() if type_checking else {
        id(child) for node in ast.walk(tree) if isinstance(node, ast.If)
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


def _code_block(markdown: str, heading: str) -> list[str]:
    """The lines of the first fenced code block after the line `heading`."""
    after = markdown.split(f"\n{heading}\n", 1)[1]
    return after.split("```")[1].splitlines()[1:]  # [0]: the rest of the opening fence


def _unit(module: str) -> str:
    """What docs/architecture.md's layers name a module by: its subpackage ("frontends/"), or
    its own file at the top of the package ("cli.py", "__init__.py")."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__.py"
    return f"{parts[0]}/" if (PACKAGE / parts[0]).is_dir() else f"{parts[0]}.py"


def test_the_architecture_names_every_module_of_the_package_and_no_other():
    listed, directories = set(), []
    for line in _code_block(ARCHITECTURE.read_text(), "## Modules"):
        depth = (len(line) - len(line.lstrip(" "))) // 2
        names = re.split(r" {2,}", line.strip())[0]  # then the description
        del directories[depth:]
        for name in names.split(", "):
            if name.endswith("/"):
                directories.append(name)
            else:
                listed.add("".join(directories[1:]) + name)  # [0]: pyannote_wavlm_prune/
    modules = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    assert len(modules) > 70 and "frontends/units/conv.py" in listed  # the map was read
    assert {name for name in listed if name.endswith(".py")} == modules


def test_no_module_imports_from_a_layer_above_its_own():
    """Each line of the layers is one layer, the highest first; units of one line are
    independent of each other. Imports for type checkers count too."""
    lines = _code_block(ARCHITECTURE.read_text(), "## Layers")
    layers = [line.split() for line in reversed(lines) if line.strip()]
    layer_of = {unit: index for index, units in enumerate(layers) for unit in units}
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    assert {_unit(module) for module in modules} == set(layer_of)  # each module in a layer

    upward = []
    for path in paths:
        module = _module_name(path)
        for imported in sorted(_imports(path, modules, type_checking=True)):
            here, there = _unit(module), _unit(imported)
            if here != there and layer_of[there] >= layer_of[here]:
                upward.append(f"{module} imports {imported}: {there} is not below {here}")
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_frontends_import_nothing_of_pyannote():
    found = []
    for path in sorted((PACKAGE / "frontends").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            found += [f"{path.relative_to(PACKAGE)}: {name}" for name in names
                      if name.split(".")[0] == "pyannote"]
    assert found == []


def test_the_package_has_no_import_cycle():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    graph = {_module_name(path): _imports(path, modules) for path in paths}
    assert len(graph) > 40 and graph["pyannote_wavlm_prune.frontends.cost"]  # the parse saw imports

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


def test_the_old_name_of_the_front_end_package_imports_the_same_modules_with_a_warning():
    """frontends/ was wavlm/ until it held HuBERT and wav2vec 2.0: code and pickles that name
    the old modules get the new ones themselves (the same classes), with a DeprecationWarning.
    In a fresh interpreter: the warning is said on the first import only."""
    script = """
import pickle, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from pyannote_wavlm_prune.wavlm import Structure
    from pyannote_wavlm_prune.wavlm.frontend import WavLMFrontEnd
    import pyannote_wavlm_prune.wavlm.units.conv as conv
from pyannote_wavlm_prune import frontends
from pyannote_wavlm_prune.frontends import frontend, units
gate = pickle.loads(b"cpyannote_wavlm_prune.wavlm.gates\\nHardConcreteGate\\n.")
print([Structure is frontends.Structure, WavLMFrontEnd is frontend.WavLMFrontEnd,
       conv is units.conv, gate is frontends.HardConcreteGate,
       [w.category.__name__ for w in caught if "pyannote_wavlm_prune.frontends" in str(w.message)]])
"""
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[True, True, True, True, ['DeprecationWarning']]"


# tests/data: checkpoints written by earlier versions, each with its outputs on its waveforms
# - old-format-large-pruned: a tiny pruned Large-layout model (pruned CNN layer norms and
#   feature projection, a removed attention block), saved by commit 629af64;
# - old-format-diarizen-import: a tiny pruned Large-layout DiariZen model (write_hub of
#   tests/diarizen_helpers.py, seed 3, TINY_BACKEND, TINY_PRUNED's sizes in the Large layout)
#   imported by commit c9f53e6, whose hyper-parameters held DiariZen's four numerics
#   (layer_weighting "linear", conv_output_scale, pruned_norms "kept", waveform_norm_eps 1e-5)
#   before they became the variant "diarizen".
OLD_CHECKPOINTS = {
    "old-format-large-pruned": ("((0, 1, 2), ()) (True, False) default"),
    "old-format-diarizen-import": ("((1, 3), (0, 2, 3), (), (2,)) (True, True, False, True) "
                                   "diarizen"),
}


@pytest.mark.parametrize("name", sorted(OLD_CHECKPOINTS))
def test_checkpoints_of_earlier_versions_load_and_give_their_recorded_outputs(name):
    script = f"""
import pytest
import torch
from helpers import network_depth, rounding_bound
from pyannote.audio import Model
model = Model.from_pretrained({str(DATA / (name + '.ckpt'))!r}).eval()
recorded = torch.load({str(DATA / (name + '.outputs.pt'))!r})
with torch.no_grad():
    outputs = model(recorded["waveforms"])
structure = model.structure
print(type(model).__name__, structure.kept_heads, structure.attention_layers, model.hparams.variant)
print((outputs - recorded["outputs"]).abs().max().item())
print(rounding_bound(recorded["outputs"], network_depth(model)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, check=True, cwd=Path(__file__).parent)
    description, difference, bound = result.stdout.strip().splitlines()[-3:]
    assert description == f"WavLMSegmentation {OLD_CHECKPOINTS[name]}"
    # float32 outputs recorded on another machine or release: equal up to rounding
    assert float(difference) <= float(bound)


def test_the_recorded_outputs_are_log_probabilities_of_7_powerset_classes():
    recorded = torch.load(DATA / "old-format-large-pruned.outputs.pt")
    assert recorded["outputs"].shape == (2, 49, 7)
    assert torch.allclose(recorded["outputs"].exp().sum(-1), torch.ones(2, 49), atol=1e-5)


def test_an_embedding_checkpoint_naming_the_former_module_loads_with_its_weights(tmp_path):
    """Checkpoints of train_embedding / untrained_embedding written before
    pipelines/embedding.py became embedding_training.py name pipelines.embedding.XVectorMFCC."""
    from pyannote_wavlm_prune import save_checkpoint
    from pyannote_wavlm_prune.models.loading import load_model
    from pyannote_wavlm_prune.pipelines.embedding_training import XVectorMFCC, untrained_embedding

    model = untrained_embedding(dimension=32)
    path = save_checkpoint(model, tmp_path / "embedding.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    architecture = checkpoint["pyannote.audio"]["architecture"]
    assert architecture == {"module": "pyannote_wavlm_prune.pipelines.embedding_training",
                            "class": "XVectorMFCC"}
    architecture["module"] = "pyannote_wavlm_prune.pipelines.embedding"
    torch.save(checkpoint, path)
    loaded = load_model(path, "embedding").eval()  # untrusted: unpickled without running code
    assert type(loaded) is XVectorMFCC
    waveforms = torch.randn(2, 1, 32000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(loaded(waveforms), model(waveforms))


# the method and the design are written down in the project itself (docs/method.md,
# docs/architecture.md): nothing may cite or need a document outside it, i.e. a markdown
# file the project does not have, the upper-case name of one of its docs (the name of a
# note outside it, not of the project's page), or a folder beside the repository (as
# `../name`, or as `name/subfolder` for a subfolder it has), read from the disk: the
# names the project must not need are those of the folders that are there
MARKDOWN_NAME = re.compile(r"\b([\w-]+\.md)\b")
DOCS_REFERENCE = re.compile(r"(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
MARKDOWN_LINK = re.compile(r"\]\(([\w./-]*?\.md)?(?:#([\w-]+))?\)")


def _tracked_text_files() -> dict[str, str]:
    """{path relative to the repository: text} of every tracked file that is text."""
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    files = {}
    for name in filter(None, listing.split("\0")):
        try:
            files[name] = (ROOT / name).read_text()
        except (UnicodeDecodeError, FileNotFoundError):  # binary, or deleted in the work tree
            continue
    return files


def _folders_beside() -> dict[str, list[str]]:
    """{name: names of its subfolders} of each folder beside the repository (no subfolders
    for a folder that cannot be read)."""
    beside = {}
    for folder in ROOT.parent.iterdir():
        if folder.is_dir() and folder != ROOT:
            try:
                beside[folder.name] = [inner.name for inner in folder.iterdir() if inner.is_dir()]
            except OSError:
                beside[folder.name] = []
    return beside


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text (code blocks skipped)."""
    anchors, in_code = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif line.startswith("#") and not in_code:
            heading = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return anchors


def test_no_file_cites_a_document_outside_the_project():
    files = _tracked_text_files()
    assert "docs/method.md" in files and "README.md" in files  # the listing was read
    markdown = {Path(name).name for name in files if name.endswith(".md")}
    docs = [Path(name).stem.upper() for name in files
            if name.startswith("docs/") and name.endswith(".md")]
    upper_case_docs = re.compile(rf"\b(?:{'|'.join(docs)})\b(?!\.md)")
    beside = _folders_beside()
    outside_folder = re.compile("|".join(
        [rf"\.\./{re.escape(name)}(?![\w.-])" for name in beside]
        + [rf"(?<![\w.-]){re.escape(name)}/{re.escape(inner)}(?![\w.-])"
           for name, inners in beside.items() for inner in inners]) or r"(?!)")

    def cites_outside(line: str) -> bool:
        return bool(outside_folder.search(line) or upper_case_docs.search(line)
                    or set(MARKDOWN_NAME.findall(line)) - markdown)

    # the check catches what it is for, and not the project's own pages
    assert all(cites_outside(line) for line in [f"see {doc} (2)" for doc in docs]
               + [f"in {doc}.md" for doc in docs] + [f"../{name}/notes" for name in beside]
               + [f"{name}/{inner}/x" for name, inners in beside.items() for inner in inners])
    assert not any(cites_outside(f"[page](docs/{doc.lower()}.md)") for doc in docs)
    citing = [f"{name}:{number}: {line.strip()}"
              for name, text in files.items() if name != "tests/test_architecture.py"
              for number, line in enumerate(text.splitlines(), 1)
              if cites_outside(line)]
    assert not citing, "citations of documents outside the project:\n" + "\n".join(citing)


def test_every_reference_to_a_document_names_an_existing_file_and_section():
    references = []  # (citing file, document, anchor or None)
    for name, text in _tracked_text_files().items():
        references += [(name, ROOT / path, anchor) for path, anchor in DOCS_REFERENCE.findall(text)]
        if name.endswith(".md"):  # links relative to the document itself
            references += [(name, (ROOT / name).parent / path if path else ROOT / name, anchor)
                           for path, anchor in MARKDOWN_LINK.findall(text)]
    assert len(references) > 10  # the references were read
    broken = [f"{name} -> {document.relative_to(ROOT)}{'#' + anchor if anchor else ''}"
              for name, document, anchor in references
              if not document.is_file() or anchor and anchor not in _anchors(document.read_text())]
    assert not broken, "references to no document or section:\n" + "\n".join(broken)
