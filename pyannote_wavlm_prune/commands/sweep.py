"""`sweep`: from one teacher, a grid of pruning strategies x objectives x targets (x data shares)."""

from __future__ import annotations

from pathlib import Path

from .arguments import add_trust_argument

EXAMPLE = Path(__file__).parent.parent / "recipe" / "study.yml"


def add_arguments(parser):
    parser.add_argument("recipe", help="recipe YAML file with a `sweep:` section (see "
                                       "pyannote_wavlm_prune.recipe.sweep)")
    parser.add_argument("--example", action="store_true",
                        help="write the paper's study at the quickstart's scale (11 cells) to "
                             "RECIPE instead of running it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--restart", action="store_true",
                        help="start over the stages whose options changed (and those after them)")
    add_trust_argument(parser)


def run(args) -> int:
    if args.example:
        from .recipe import write_example

        path = write_example(args.recipe, EXAMPLE)
        print(f"example sweep written to {path}: run it with `pyannote-wavlm-prune sweep {path}`")
        return 0
    from ..recipe.run import Recipe
    from ..recipe.sweep import run_sweep, sweep_table

    recipe = Recipe.from_yaml(args.recipe)
    if recipe.sweep is None:
        raise ValueError(f"{args.recipe} has no sweep section: expected one, e.g. "
                         "sweep: {strategies: [overall, progressive], targets: [0.5, 0.8]}.")
    rows = run_sweep(recipe, progress=not args.no_progress, restart=args.restart)
    print(sweep_table(rows), end="")
    print(f"table, rows and plot: {recipe.experiment}/sweep.txt, sweep.json, sweep.png")
    return 0
