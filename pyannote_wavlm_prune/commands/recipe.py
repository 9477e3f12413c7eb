"""`recipe`: every stage of the method from one YAML file, resumable."""

from __future__ import annotations

from pathlib import Path

from .arguments import add_trust_argument

EXAMPLE = Path(__file__).parent.parent / "recipe" / "example.yml"


def add_arguments(parser):
    parser.add_argument("recipe", help="recipe YAML file (see pyannote_wavlm_prune.recipe.Recipe)")
    parser.add_argument("--example", action="store_true",
                        help="write an example recipe (the tiny simulated corpus, offline, in "
                             "minutes) to RECIPE instead of running it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--restart", action="store_true",
                        help="start over the stages whose options changed (and those after them)")
    add_trust_argument(parser)


def write_example(path: str, example: Path = EXAMPLE) -> Path:
    """Write an example recipe (`example`) to `path`; refuse to replace an existing file."""
    from ..files import write_atomically

    path = Path(path)
    if path.exists():
        raise SystemExit(f"--example: {path} exists: expected a new file name.")
    return write_atomically(path, lambda file: file.write(example.read_bytes()))


def run(args) -> int:
    if args.example:
        path = write_example(args.recipe)
        print(f"example recipe written to {path}: run it with "
              f"`pyannote-wavlm-prune recipe {path}`")
        return 0
    from ..recipe.run import Recipe

    results = Recipe.from_yaml(args.recipe).run(progress=not args.no_progress,
                                                restart=args.restart)
    for stage, path in results.items():
        print(f"{stage}: {path}")
    return 0
