"""Cost of one DistillPrune training step against one plain fine-tuning step, same batch.

DistillPrune runs the frozen teacher's WavLM (no gradient), the gated student's WavLM
(forward and backward) and the cost model; plain fine-tuning runs the whole model with the
powerset loss. Steps are interleaved (a, b, a, b, ...) and the medians compared.

    python benchmarks/bench_distill_step.py [--wavlm tiny|quickstart|base_plus] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.utils.loss import nll_loss
from pyannote.audio.utils.powerset import Powerset

from pyannote_wavlm_prune import WavLMSegmentation, attach_gates
from pyannote_wavlm_prune.frontends.cost import expected_sparsity
from pyannote_wavlm_prune.frontends.presets import base_plus_config, tiny_config
from pyannote_wavlm_prune.tasks.distill_prune import (
    Lagrangian,
    default_distilled_layers,
    distillation_loss,
)


def _model(wavlm) -> WavLMSegmentation:
    model = WavLMSegmentation(wavlm=wavlm)
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=8.0,
        classes=[f"speaker#{i}" for i in range(4)], powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wavlm", choices=["tiny", "quickstart", "base_plus"], default="quickstart")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repetitions", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)

    if arguments.wavlm == "quickstart":
        from pyannote_wavlm_prune.recipe.quickstart import quickstart_wavlm_config

        wavlm = quickstart_wavlm_config()
    else:
        wavlm = {"tiny": tiny_config, "base_plus": base_plus_config}[arguments.wavlm]()

    plain = _model(wavlm).train()
    teacher = _model(wavlm).eval()
    student = attach_gates(_model(wavlm)).train()
    student.frontend.load_state_dict(teacher.frontend.state_dict(), strict=False)
    lagrangian = Lagrangian()
    layers = default_distilled_layers(teacher.frontend.num_layers)
    powerset = Powerset(4, 2)
    plain_optimizer = torch.optim.AdamW(plain.parameters())
    student_optimizer = torch.optim.AdamW([*student.frontend.parameters(), *lagrangian.parameters()])

    waveforms = torch.randn(arguments.batch_size, 1, int(arguments.duration * 16000))
    frames = plain.num_frames(waveforms.shape[-1])
    target = torch.randint(0, powerset.num_powerset_classes, (arguments.batch_size, frames))

    def fine_tuning_step():
        loss = nll_loss(plain(waveforms), target)
        loss.backward()
        plain_optimizer.step()
        plain_optimizer.zero_grad()

    def distill_prune_step():
        with torch.no_grad():
            reference = teacher.frontend(waveforms[:, 0])
        states = student.frontend(waveforms[:, 0])
        loss, _, _ = distillation_loss([states[i] for i in layers], [reference[i] for i in layers])
        gap = expected_sparsity(student.frontend, teacher.frontend.config) - 0.5
        (loss + lagrangian(gap).float()).backward()
        student_optimizer.step()
        student_optimizer.zero_grad()

    for _ in range(2):
        fine_tuning_step()
        distill_prune_step()
    times = {"fine-tuning": [], "DistillPrune": []}
    for _ in range(arguments.repetitions):
        for name, step in (("fine-tuning", fine_tuning_step), ("DistillPrune", distill_prune_step)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    fine, distill = (statistics.median(times[name]) for name in ("fine-tuning", "DistillPrune"))
    print(f"WavLM {arguments.wavlm}, batch {arguments.batch_size} x {arguments.duration:g} s, "
          f"{arguments.threads} threads: fine-tuning step {fine * 1e3:.0f} ms, DistillPrune step "
          f"{distill * 1e3:.0f} ms, ratio {distill / fine:.2f}")


if __name__ == "__main__":
    main()
