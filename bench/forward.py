"""Per-image latency of the NumPy forward pass vs Keras `model(x)` vs the LiteRT interpreter, natively.

    python bench/forward.py [--model models/default] [--runs 30]

Same model, same input (the committed sample images, preprocessed), batch 1 and
batch 16; median of --runs timed runs after warm-up. Prints a table, then JSON.
The in-browser figure for the same NumPy module comes from bench/browser.py.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rendernet import load_model, preprocess


def median_ms_per_image(run, batch, runs: int) -> float:
    for _ in range(3):
        run(batch)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000 / len(batch)


def litert_runner(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}

    def run(batch):
        interpreter = interpreters.get(len(batch))
        if interpreter is None:
            interpreter = Interpreter(model_path=str(path))
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], batch.shape)
            interpreter.allocate_tensors()
            interpreters[len(batch)] = interpreter
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    folder = Path(args.model)
    model = load_model(folder)
    images = sorted((ROOT / "data" / "sample").glob("*/*.webp"))[:16]
    batches = {
        size: np.stack([preprocess(path, model.input_size, model.crop) for path in images[:size]]).astype(np.float32)
        for size in (1, 16)
    }

    import keras

    keras_model = keras.saving.load_model(folder / "model.keras")
    runners = {"numpy (rendernet)": model.forward, "keras model(x)": lambda batch: keras_model(batch, training=False)}
    if (folder / "model.tflite").exists():
        runners["litert (ai-edge-litert)"] = litert_runner(folder / "model.tflite")
    results = {
        "model": str(folder),
        "macs_per_image": model.manifest["macs"],
        "params": model.manifest["params"],
        "runs": args.runs,
        "ms_per_image": {},
    }
    for name, run in runners.items():
        results["ms_per_image"][name] = {
            f"batch{size}": round(median_ms_per_image(run, batch, args.runs), 3) for size, batch in batches.items()
        }
    print(f"model {folder}: {results['params']:,} parameters, {results['macs_per_image']:,} multiply-adds per image")
    print(f"{'runtime':<26}{'batch 1 ms/img':>16}{'batch 16 ms/img':>17}")
    for name, values in results["ms_per_image"].items():
        print(f"{name:<26}{values['batch1']:>16.3f}{values['batch16']:>17.3f}")
    results["numpy_ms_by_layer_type"] = model.profile(batches[1], repeats=5)
    print(
        "numpy, batch 1, ms per layer type: " + ", ".join(f"{kind} {ms}" for kind, ms in results["numpy_ms_by_layer_type"].items())
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
