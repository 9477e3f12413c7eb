"""Speaker embedding runtimes: the WeSpeaker ResNet34 trunk in torch and in ONNX Runtime.

A random `WeSpeakerResNet34` (pyannote's, the architecture of community-1's embedding), its
trunk (`resnet.forward_frames(fbank)`, what `embedding_runtime` hands to ONNX Runtime) timed
on batches of 8 chunks of synthetic speech (`deploy.embedding.speech_like`), 10 s and 8 s:
torch, ONNX Runtime fp32, and int8 schemes of ONNX Runtime's quantisation:

- static QDQ, uint8 activations, int8 weights per channel (what "onnxruntime-int8" runs);
- static QDQ per tensor, and with int8 activations;
- dynamic (ConvInteger), int8 and uint8 weights.

Static graphs are calibrated on 8 chunks of 3 s of other synthetic speech, as
`embedding_for_runtime`. Each row: median of `--repetitions` round-robin calls, per chunk;
differences with torch on the frames (max abs) and the embeddings (max cosine distance).

    python benchmarks/bench_embedding_runtime.py [--threads 1] [--repetitions 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from onnxruntime import quantization
from pyannote.audio.models.embedding import WeSpeakerResNet34

from pyannote_wavlm_prune.deploy.embedding import (
    CALIBRATION_CHUNKS,
    CALIBRATION_DURATION,
    FrameWiseTrunk,
    export_trunk,
    run_trunk,
    speech_like,
)
from pyannote_wavlm_prune.deploy.onnx import inference_session


def schemes(fp32: bytes, calibration: list[torch.Tensor], directory: Path) -> dict[str, bytes]:
    """The int8 graphs compared with the chosen one."""
    source = directory / "fp32.onnx"
    source.write_bytes(fp32)
    prepared = directory / "prepared.onnx"
    quantization.quant_pre_process(str(source), str(prepared))
    graphs = {}
    for name, weights in (("dynamic ConvInteger, int8 weights", quantization.QuantType.QInt8),
                          ("dynamic ConvInteger, uint8 weights", quantization.QuantType.QUInt8)):
        target = directory / f"{len(graphs)}.onnx"
        quantization.quantize_dynamic(prepared, target, op_types_to_quantize=["Conv"],
                                      weight_type=weights)
        graphs[name] = target.read_bytes()

    for name, activations, per_channel in (
        ("static QDQ u8/s8, per tensor", quantization.QuantType.QUInt8, False),
        ("static QDQ s8/s8, per channel", quantization.QuantType.QInt8, True),
    ):
        class Reader(quantization.CalibrationDataReader):
            def __init__(self):
                self.batches = iter([{"fbank": fbank.numpy()} for fbank in calibration])

            def get_next(self):
                return next(self.batches, None)

        target = directory / f"{len(graphs)}.onnx"
        quantization.quantize_static(prepared, target, Reader(),
                                     quant_format=quantization.QuantFormat.QDQ,
                                     activation_type=activations,
                                     weight_type=quantization.QuantType.QInt8,
                                     per_channel=per_channel)
        graphs[name] = target.read_bytes()
    return graphs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--repetitions", type=int, default=5, help="timed calls per row")
    parser.add_argument("--chunks", type=int, default=8, help="chunks per batch (default 8)")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 8.0],
                        help="chunk durations in seconds (default 10 8)")
    parser.add_argument("--all-schemes", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the int8 schemes not chosen")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    model = WeSpeakerResNet34().eval()
    trunk = FrameWiseTrunk(model.resnet).eval()

    start = time.perf_counter()
    fp32 = export_trunk(model)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    int8 = export_trunk(model, int8=True)
    int8_s = time.perf_counter() - start
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{arguments.threads} thread(s), median of {arguments.repetitions} round-robin calls")
    print(f"export + check: fp32 {export_s:.1f} s, int8 {int8_s:.1f} s")
    print(f"fp32: {fp32.summary()}\nint8: {int8.summary()}\n")

    graphs = {"ONNX Runtime fp32": fp32.onnx,
              "ONNX Runtime int8, static QDQ u8/s8 per channel (chosen)": int8.onnx}
    if arguments.all_schemes:
        with tempfile.TemporaryDirectory() as directory, torch.inference_mode():
            calibration = [model.compute_fbank(speech_like(
                CALIBRATION_CHUNKS, round(CALIBRATION_DURATION * 16000)))]
            graphs.update({f"ONNX Runtime int8, {name}": graph for name, graph in
                           schemes(fp32.onnx, calibration, Path(directory)).items()})
    sessions = {name: inference_session(graph, num_threads=arguments.threads)
                for name, graph in graphs.items()}

    for duration in arguments.durations:
        waveforms = speech_like(arguments.chunks, round(duration * 16000), seed=10)
        with torch.inference_mode():
            fbank = model.compute_fbank(waveforms)
            expected = trunk(fbank.clone())
            embeddings = model.forward_embedding(expected)
        runs = {"torch": lambda x=fbank: trunk(x.clone())}
        runs.update({name: (lambda s=session, x=fbank: run_trunk(s, x))
                     for name, session in sessions.items()})
        times = {name: [] for name in runs}
        with torch.inference_mode():
            for run in runs.values():  # warm-up
                run()
            for _ in range(arguments.repetitions):
                for name, run in runs.items():
                    begin = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - begin)
            fbank_times = []
            for _ in range(arguments.repetitions):
                begin = time.perf_counter()
                model.compute_fbank(waveforms)
                fbank_times.append(time.perf_counter() - begin)

        reference = 1e3 * statistics.median(times["torch"]) / arguments.chunks
        print(f"{arguments.chunks} chunks of {duration:g} s, fbank {tuple(fbank.shape)}: "
              f"fbank (torch) {1e3 * statistics.median(fbank_times) / arguments.chunks:.1f} "
              "ms/chunk")
        print("| trunk | ms/chunk | vs torch | frames max abs diff | embeddings max cosine "
              "distance |\n| --- | --- | --- | --- | --- |")
        for name, run in runs.items():
            latency = 1e3 * statistics.median(times[name]) / arguments.chunks
            with torch.inference_mode():
                frames = run()
                cosine = torch.nn.functional.cosine_similarity(
                    model.forward_embedding(frames), embeddings, dim=-1)
            print(f"| {name} | {latency:.1f} | {reference / latency:.2f}x | "
                  f"{(frames - expected).abs().max().item():.3g} | "
                  f"{(1 - cosine).max().item():.2g} |")
        print()


if __name__ == "__main__":
    main()
