"""Sparsity trajectories of DistillPrune's two controllers, same run otherwise (docs/results.md).

    python benchmarks/controller_trajectory.py [--steps 300] [--sparsity 0.5] [--output docs/images]

The tiny simulated corpus (built in a temporary directory), the tiny random WavLM of the
tests, DistillPrune's default settings (the papers' learning rates, see
docs/method.md#the-objective; batch 2, 0.5 s chunks), a warm-up of a third of the run.
Writes controller-<name>.png and prints, per controller, the sparsity of the structure
`prune()` makes at the end, before and after exact finalisation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from helpers import tiny_model  # noqa: E402

from pyannote_wavlm_prune import prune  # noqa: E402
from pyannote_wavlm_prune.data.simulate import build_tiny_corpus  # noqa: E402
from pyannote_wavlm_prune.recipe.callbacks import SparsityTrajectory, plot_trajectory  # noqa: E402
from pyannote_wavlm_prune.recipe.training import trainer  # noqa: E402
from pyannote_wavlm_prune.tasks import DistillPrune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--output", default="docs/images")
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        protocol = build_tiny_corpus(Path(scratch) / "corpus")
        for controller in ("lagrangian", "projection"):
            lightning.seed_everything(0, verbose=False)
            task = DistillPrune(protocol, teacher=tiny_model(duration=0.5), sparsity=args.sparsity,
                                warmup_steps=args.steps // 3, batch_size=2, validate=False,
                                controller=controller, cache=Path(scratch) / f"{controller}.npz")
            student = task.student()
            trajectory = SparsityTrajectory(Path(scratch) / controller)
            trainer(max_steps=args.steps, progress=False, callbacks=[trajectory]).fit(student)
            student.eval()
            exact = prune(student, sparsity=args.sparsity)
            title = (f"{controller}: target {args.sparsity}, gates end at "
                     f"{task.pruned_sparsity():.3f}, exact finalisation "
                     f"{exact.budget_report.sparsity_after:.3f}")
            plot_trajectory(trajectory.points, output / f"controller-{controller}.png", title)
            print(f"{controller}: pruned structure {task.pruned_sparsity():.4f}, exact "
                  f"{exact.budget_report.sparsity_after:.4f} ({exact.budget_report.changed} units "
                  f"changed), target {args.sparsity}")


if __name__ == "__main__":
    main()
