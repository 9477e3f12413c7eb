"""What the README shows runs as written, and says what it does."""

import os
import re
import shlex
import shutil
from pathlib import Path

from pyannote.core import Annotation
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

from pyannote_wavlm_prune.pipelines.evaluate import as_written_in_rttm

README = Path(__file__).parent.parent / "README.md"


def test_readme_api_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_block_after("## A tour of the API"), "README.md", "exec"), namespace)
    pruned = namespace["pruned"]
    assert set(pruned.structure.to_dict()) >= {"conv_channels", "kept_heads", "ffn_widths"}
    assert os.path.isfile(tmp_path / "pruned.ckpt")
    # the published structure was instantiated at its size
    small = namespace["small"]
    assert 18.8e6 < sum(p.numel() for p in small.frontend.parameters()) < 19.0e6


def python_block_after(heading: str) -> str:
    """The first python block of the README after `heading`, preceded by as many empty lines
    as come before it in the README (a traceback then names the README's own line)."""
    text = README.read_text()
    start = text.index(heading)
    block = re.compile(r"```python\n(.*?)```", flags=re.DOTALL).search(text, start)
    assert block, f"the README has no python block after {heading!r}"
    return "\n" * text.count("\n", 0, block.start(1)) + block.group(1)


def rttm_annotation(directory: Path, uri: str) -> Annotation:
    """What evaluate wrote for `uri` in `directory` (an empty file: no speech found)."""
    return load_rttm(directory / f"{uri}.rttm").get(uri, Annotation(uri=uri))


def scored_by_the_test(directory: Path) -> tuple[list, dict[str, float], float]:
    """The flow's test files, and the DER (%, collar 0) of the RTTM files in `directory`
    against their references, per file and pooled, as pyannote.metrics computes them."""
    from pyannote_wavlm_prune.data.protocols import get_protocol
    from pyannote_wavlm_prune.pipelines import get_files

    files = get_files(get_protocol("data/simulated/tiny/database.yml"), "test")
    metric = DiarizationErrorRate(collar=0.0)
    ders = {file["uri"]: 100 * metric(file["annotation"], rttm_annotation(directory, file["uri"]),
                                      uem=file.get("annotated"))
            for file in files}
    return files, ders, 100 * abs(metric)


def command_line_flow() -> list[str]:
    """The lines of the README's command-line flow (the bash block after the API tour)."""
    text = README.read_text()
    start = text.index("The same flow from the command line")
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.DOTALL)
    assert block, "the README has no command-line flow"
    return block.group(1).splitlines()


def run_flow(lines: list[str]) -> list[str]:
    """Run `lines` as bash would (VAR="..." assignments, unquoted $VAR split into words), each
    pyannote-wavlm-prune command in this process; return the commands run."""
    from pyannote_wavlm_prune.cli import main

    variables: dict[str, str] = {}
    commands = []
    for line in lines:
        assignment = re.fullmatch(r"(\w+)=(.*)", line.strip())
        if assignment:
            (value,) = shlex.split(assignment.group(2))
            variables[assignment.group(1)] = value
            continue
        words = shlex.split(re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], line),
                           comments=True)
        if not words:
            continue
        assert words[0] == "pyannote-wavlm-prune", line
        assert main(words[1:]) == 0, line
        commands.append(words[1])
    return commands


def test_readme_command_line_flow_runs_as_written_from_an_empty_directory(tmp_path, monkeypatch,
                                                                         capsys):
    # what a user who pip-installed the package has: an empty directory, no hub
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commands = run_flow(command_line_flow())
    assert commands == ["simulate", "train", "prune", "distill", "finetune", "export", "optimize",
                        "evaluate", "bench", "recipe", "recipe"]
    printed = capsys.readouterr().out

    # prune said what it reached: the target, exactly (the default exact finish)
    reached = re.search(r"WavLM parameters: [\d,]+ of [\d,]+ \(sparsity ([\d.]+)\)", printed)
    assert reached and abs(float(reached.group(1)) - 0.5) <= 0.005
    for stage in ("1-teacher/model.ckpt", "2-prune/pruned.ckpt", "3-distill/model.ckpt",
                  "4-finetune/model.ckpt"):
        assert (tmp_path / "exp" / stage).is_file(), stage
        assert (tmp_path / "exp-recipe" / stage).is_file(), stage
    for pipeline in ("my-pipeline", "my-tuned-pipeline"):
        assert (tmp_path / pipeline / "config.yaml").is_file()
        assert (tmp_path / pipeline / "embedding" / "pytorch_model.bin").is_file()
    # evaluate printed the DER of what it found: pyannote.metrics, run here on the RTTM files it
    # wrote and the protocol's references, gives each file's figure and the pooled total
    files, ders, total = scored_by_the_test(tmp_path / "my-rttm")
    for file in files:
        row = re.search(rf"^{re.escape(file['uri'][:24])}\s+([\d.]+)\s", printed, flags=re.MULTILINE)
        assert row, file["uri"]
        assert abs(float(row.group(1)) - ders[file["uri"]]) <= 0.005 + 1e-9, file["uri"]
    printed_total = re.search(r"^TOTAL\s+([\d.]+)\s", printed, flags=re.MULTILINE)
    assert printed_total and abs(float(printed_total.group(1)) - total) <= 0.005 + 1e-9
    # bench compared the two checkpoints, the pruned one smaller
    params = {name: int(count.replace(",", "")) for name, count in re.findall(
        r"^(exp/\S+)\s+([\d,]+)\s", printed, flags=re.MULTILINE)}
    assert params["exp/4-finetune/model.ckpt"] < params["exp/1-teacher/model.ckpt"]

    # the README's pipeline snippet, run where the flow ran, on one of the test files: the
    # pruned checkpoint loads with its sparsity, and pyannote's Pipeline.from_pretrained
    # diarizes as evaluate did (the RTTM file it wrote for that file). The flow's models
    # train on a few batches and find their speakers throughout every file: this compares
    # the loaded pipeline's output with evaluate's, it does not judge the model
    file = files[0]
    shutil.copy(file["audio"], tmp_path / "meeting.wav")
    namespace: dict = {}
    exec(compile(python_block_after("## A pruned or imported model in a pyannote pipeline"),
                 "README.md", "exec"), namespace)
    assert abs(namespace["model"].structure.sparsity() - 0.5) <= 0.005
    found = rttm_annotation(tmp_path / "my-rttm", file["uri"])
    diarization = as_written_in_rttm(namespace["diarization"])
    assert len(diarization.labels()) == len(found.labels()) and diarization.get_timeline()
    assert DiarizationErrorRate()(found, diarization) < 1e-9

    # the recipe, run again, finds every stage done: it says so and writes nothing
    experiment = tmp_path / "exp-recipe"
    stamps = {path: path.stat().st_mtime_ns for path in experiment.rglob("*") if path.is_file()}
    from pyannote_wavlm_prune.cli import main

    assert main(["recipe", "recipe.yml", "--no-progress"]) == 0
    again = capsys.readouterr()
    assert again.out.strip().splitlines()[-4:] == [
        f"{stage}: {experiment / path}" for stage, path in [
            ("teacher", "1-teacher/model.ckpt"), ("pruned", "2-prune/pruned.ckpt"),
            ("distilled", "3-distill/model.ckpt"), ("final", "4-finetune/model.ckpt")]]
    assert {path: path.stat().st_mtime_ns for path in experiment.rglob("*") if path.is_file()} == stamps


def test_the_readme_stays_a_front_door_of_at_most_250_lines():
    assert 200 < len(README.read_text().splitlines()) <= 250
