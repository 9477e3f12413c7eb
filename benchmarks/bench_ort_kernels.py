"""ONNX Runtime CPU kernels behind two deployment choices (see docs/deployment.md).

1. SkipLayerNormalization (ONNX Runtime's fusion of a residual Add and a LayerNormalization)
   against the two nodes it replaces, on a (1, 399, 768) tensor: the shape of WavLM Base+'s
   hidden states for an 8 s chunk. With `--onnx FILE` (a graph bench_deploy.py wrote, e.g.
   s80.onnx), also how many such fusions ONNX Runtime makes in it.
2. WavLM's positional convolution (768 channels, kernel 128, 16 groups) on (1, 768, 399): fp32,
   dynamic int8 (ConvInteger, int8 and uint8 weights) and static int8 (QDQ, calibrated on
   random inputs: only its speed is measured).

Each graph is timed alone (warm-up, then the median of `--repetitions` calls), 2 threads.

    python benchmarks/bench_ort_kernels.py [--threads 2] [--repetitions 50] [--onnx s80.onnx]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime import quantization


def session(model: onnx.ModelProto | str, threads: int, optimized: str | None = None,
            level=onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = level
    if optimized:
        options.optimized_model_filepath = optimized
    source = model if isinstance(model, str) else model.SerializeToString()
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def median_ms(run, inputs: dict, repetitions: int) -> float:
    for _ in range(3):
        run.run(None, inputs)
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        run.run(None, inputs)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layer_norm_graphs() -> dict[str, onnx.ModelProto]:
    shape = [1, 399, 768]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in "xs"]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    weights = [numpy_helper.from_array(np.ones(768, np.float32), "g"),
               numpy_helper.from_array(np.zeros(768, np.float32), "b")]
    nodes = {
        "SkipLayerNormalization (fused)": [helper.make_node(
            "SkipLayerNormalization", ["x", "s", "g", "b"], ["y"], domain="com.microsoft",
            epsilon=1e-5)],
        "Add + LayerNormalization": [
            helper.make_node("Add", ["x", "s"], ["a"]),
            helper.make_node("LayerNormalization", ["a", "g", "b"], ["y"], axis=-1, epsilon=1e-5)],
    }
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return {name: helper.make_model(helper.make_graph(graph, name, inputs, [output], weights),
                                    opset_imports=opsets) for name, graph in nodes.items()}


def positional_convolution(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((0.02 * rng.standard_normal((768, 48, 128))).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(768, np.float32), "bias")
    node = helper.make_node("Conv", ["x", "w", "bias"], ["y"], group=16, pads=[64, 64],
                            kernel_shape=[128])
    graph = helper.make_graph(
        [node], "positional_convolution",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 768, 399])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, bias])
    path = directory / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


class RandomInputs(quantization.CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(1)
        self.batches = iter([{"x": rng.standard_normal((1, 768, 399)).astype(np.float32)}
                             for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repetitions", type=int, default=50, help="timed calls per graph")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="an exported graph: count the SkipLayerNormalization fusions in it")
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)

    print(f"onnxruntime {onnxruntime.__version__}, {arguments.threads} threads, median of "
          f"{arguments.repetitions} calls\n")
    print("| (1, 399, 768) | latency (ms) |\n| --- | --- |")
    inputs = {name: rng.standard_normal((1, 399, 768)).astype(np.float32) for name in "xs"}
    for name, model in layer_norm_graphs().items():
        run = session(model, arguments.threads,
                      level=onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)
        print(f"| {name} | {median_ms(run, inputs, arguments.repetitions):.2f} |")

    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        if arguments.onnx:
            optimized = str(directory / "optimized.onnx")
            session(str(arguments.onnx), arguments.threads, optimized=optimized)
            kinds = [node.op_type for node in onnx.load(optimized).graph.node]
            print(f"\n{arguments.onnx}: ONNX Runtime fuses {kinds.count('SkipLayerNormalization')} "
                  "SkipLayerNormalization nodes")

        fp32 = positional_convolution(directory)
        graphs = {"fp32": fp32}
        for name, weights in (("dynamic int8, int8 weights (ConvInteger)", quantization.QuantType.QInt8),
                              ("dynamic int8, uint8 weights (ConvInteger)", quantization.QuantType.QUInt8)):
            graphs[name] = directory / f"{len(graphs)}.onnx"
            quantization.quantize_dynamic(fp32, graphs[name], op_types_to_quantize=["Conv"],
                                          weight_type=weights)
        graphs["static int8 (QDQ, QLinearConv)"] = directory / "static.onnx"
        quantization.quantize_static(
            fp32, graphs["static int8 (QDQ, QLinearConv)"], RandomInputs(),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["Conv"],
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, per_channel=True)
        x = {"x": rng.standard_normal((1, 768, 399)).astype(np.float32)}
        print("\n| positional convolution, (1, 768, 399) | latency (ms) |\n| --- | --- |")
        for name, path in graphs.items():
            run = session(str(path), arguments.threads)
            print(f"| {name} | {median_ms(run, x, arguments.repetitions):.1f} |")


if __name__ == "__main__":
    main()
