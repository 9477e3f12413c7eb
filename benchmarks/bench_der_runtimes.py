"""Accuracy cost of each deployment variant: DER (oracle clustering) per segmentation runtime.

The same segmentation model, run by each runtime of `segmentation_runtime` (torch fp32,
torch int8, ONNX Runtime fp32, ONNX Runtime int8), inside the SpeakerDiarization pipeline
with OracleClustering (speakers grouped with the reference: the segmentation alone is
scored, as segmentation papers report), on a protocol subset. Prints DER and its
components per runtime, and the change against torch fp32.

The model is a pipeline directory (its tuned `min_duration_off` is kept), e.g. the
quickstart's, or a segmentation checkpoint (default hyper-parameters):

    python benchmarks/bench_der_runtimes.py quickstart/pipeline-pruned --corpus data/simulated/quickstart
    python benchmarks/bench_der_runtimes.py pruned.ckpt --database database.yml --protocol Simulated.SpeakerDiarization.tiny
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pyannote_wavlm_prune.deploy.runtime import RUNTIMES
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, load_pipeline
from pyannote_wavlm_prune.pipelines.evaluate import evaluate_pipeline, get_files


def oracle_pipeline(model: Path, runtime: str, step: float | None):
    """An OracleClustering pipeline running `model`'s segmentation with `runtime`."""
    options = {"segmentation_runtime": runtime}
    if step is not None:
        options["segmentation_step"] = step
    if (model / "config.yaml").is_file():
        return load_pipeline(model, clustering="OracleClustering", **options)
    pipeline = SpeakerDiarization(segmentation=str(model), clustering="OracleClustering",
                                  **options)
    return pipeline.instantiate(pipeline.default_parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="pipeline directory or segmentation checkpoint")
    parser.add_argument("--corpus", type=Path, help="simulated corpus root (its database.yml)")
    parser.add_argument("--database", help="database.yml (with --protocol)")
    parser.add_argument("--protocol", help="protocol name")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--step", type=float, default=None,
                        help="segmentation step (ratio of the window); default: the pipeline's")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    arguments = parser.parse_args()

    if arguments.corpus is not None:
        from pyannote_wavlm_prune.data.simulate import get_protocol

        protocol = get_protocol(arguments.corpus, arguments.protocol)
        files = get_files(protocol, arguments.subset)
    elif arguments.protocol:
        files = get_files(arguments.protocol, arguments.subset, registry_file=arguments.database)
    else:
        raise SystemExit("give --corpus, or --protocol (and --database).")

    rows = []
    for runtime in arguments.runtimes:
        start = time.perf_counter()
        pipeline = oracle_pipeline(arguments.model, runtime, arguments.step)
        loaded = time.perf_counter() - start
        report = evaluate_pipeline(pipeline, files, progress=False)
        rows.append((runtime, report, loaded))

    reference = rows[0][1].der
    print(f"DER (%), OracleClustering, collar 0, {len(files)} files of the {arguments.subset} "
          f"set, {arguments.model}\n")
    print("| runtime | DER | change vs " + rows[0][0] + " (points) | missed | false alarm | "
          "confusion | segmentation RTF | load (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for runtime, report, loaded in rows:
        total = report.reference
        print(f"| {runtime} | {100 * report.der:.2f} | {100 * (report.der - reference):+.2f} | "
              f"{100 * report.missed / total:.2f} | {100 * report.false_alarm / total:.2f} | "
              f"{100 * report.confusion / total:.2f} | "
              f"{report.segmentation_real_time_factor:.4f} | {loaded:.1f} |")


if __name__ == "__main__":
    main()
