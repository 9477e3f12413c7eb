"""The README's tour of the API runs as written."""

import os
import re
import shlex
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
    # evaluate scored the test set
    total = re.search(r"^TOTAL\s+([\d.]+)", printed, flags=re.MULTILINE)
    assert total and 0.0 <= float(total.group(1)) < 200.0
    # bench compared the two checkpoints, the pruned one smaller
    params = {name: int(count.replace(",", "")) for name, count in re.findall(
        r"^(exp/\S+)\s+([\d,]+)\s", printed, flags=re.MULTILINE)}
    assert params["exp/4-finetune/model.ckpt"] < params["exp/1-teacher/model.ckpt"]

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
