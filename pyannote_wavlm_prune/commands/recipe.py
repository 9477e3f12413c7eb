"""`recipe`: every stage of the method from one YAML file, resumable."""

from __future__ import annotations

from ..recipe.run import Recipe


def add_arguments(parser):
    parser.add_argument("recipe", help="recipe YAML file (see pyannote_wavlm_prune.recipe.Recipe)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--restart", action="store_true",
                        help="start over the stages whose options changed (and those after them)")


def run(args) -> int:
    results = Recipe.from_yaml(args.recipe).run(progress=not args.no_progress,
                                                restart=args.restart)
    for stage, path in results.items():
        print(f"{stage}: {path}")
    return 0
