"""One inference engine in its own process, driven over stdin by benchmarks/studies/peers.py, so engines
that need different environments (tflite-runtime wants numpy<2; onnxruntime) are timed
interleaved in one run. Needs only numpy and the engine itself.

    python -m benchmarks.studies.peer_worker --engine onnxruntime --model m.onnx --threads 1 --inputs x.npy

Prints one JSON line after loading ({"init_ms", "first_ms", "version"}), then answers each
command with one JSON line: `run K` -> {"samples_ms": [K bare inference times]};
`scores` -> {"scores": [positive-class score of every input]}; `quit` -> {"peak_rss_mb",
"engine_rss_mb"}: the process's peak resident memory, and how much of it came after the inputs
were loaded (the engine, the model and its buffers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata

import numpy as np

TFLITE_ENGINES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
BUILTIN_KERNELS = "ai-edge-litert-builtin"  # ai-edge-litert without its default XNNPACK delegate


class OnnxEngine:
    def __init__(self, model: str, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.version = onnxruntime.__version__
        self.feed = None

    def set_input(self, image: np.ndarray) -> None:
        self.feed = {self.input_name: image[None].astype(np.float32)}

    def invoke(self) -> None:
        outputs = self.session.run(None, self.feed)  # the score, and the pooled features of a model that has them
        self.output = next(output for output in outputs if np.asarray(output).size == 1)

    def score(self) -> float:
        return float(np.asarray(self.output).ravel()[0])


class TfliteEngine:
    def __init__(self, engine: str, model: str, threads: int):
        from edge.interpreter import dequantize, input_details, make_interpreter, output_details, quantize

        if engine == BUILTIN_KERNELS:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            engine = "ai-edge-litert"
            self.interpreter = Interpreter(model_path=model, num_threads=threads,
                                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.interpreter.allocate_tensors()
        else:
            self.interpreter, _ = make_interpreter(model, engine, threads)
        self._quantize, self._dequantize = quantize, dequantize
        self.input, self.output_details = input_details(self.interpreter), output_details(self.interpreter)
        self.version = metadata.version(engine)

    def set_input(self, image: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], self._quantize(image[None], self.input))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def score(self) -> float:
        raw = self.interpreter.get_tensor(self.output_details["index"])
        return float(self._dequantize(raw, self.output_details).ravel()[0])


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith("VmHWM:")).split()[1]) / 1024


def reply(payload: dict) -> None:
    print(json.dumps(payload), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", required=True, choices=("onnxruntime", BUILTIN_KERNELS, *TFLITE_ENGINES))
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inputs", required=True, help=".npy of preprocessed float32 (n, h, w, c) images")
    args = parser.parse_args(argv)
    images = np.load(args.inputs)
    before_engine = peak_rss_mb()
    started = time.perf_counter()
    if args.engine == "onnxruntime":
        engine = OnnxEngine(args.model, args.threads)
    else:
        engine = TfliteEngine(args.engine, args.model, args.threads)
    init_ms = (time.perf_counter() - started) * 1000
    engine.set_input(images[0])
    started = time.perf_counter()
    engine.invoke()
    reply({"init_ms": init_ms, "first_ms": (time.perf_counter() - started) * 1000, "version": engine.version})
    done = 0
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            samples = []
            for _ in range(int(command[1])):
                engine.set_input(images[done % len(images)])
                done += 1
                started = time.perf_counter()
                engine.invoke()
                samples.append((time.perf_counter() - started) * 1000)
            reply({"samples_ms": samples})
        elif command[0] == "scores":
            scores = []
            for image in images:
                engine.set_input(image)
                engine.invoke()
                scores.append(engine.score())
            reply({"scores": scores})
        elif command[0] == "quit":
            reply({"peak_rss_mb": peak_rss_mb(), "engine_rss_mb": peak_rss_mb() - before_engine})
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
