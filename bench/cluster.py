"""Images per second of `rendernet classify` on a Dask LocalCluster of 1 and 2 worker processes (127.0.0.1), against
the same files classified in this process; every figure from one run, with the spread of 3 rounds.

    python bench/cluster.py [--images 200]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "app")]
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per worker process

from distributed import Client, LocalCluster
from rendernet import load_model
from rendernet.batch import classify_paths
from rendernet.cluster import classify_on_cluster

MODEL = ROOT / "models" / "default"


def rate(run, names, rounds=3):
    speeds = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert len(list(run(names))) == len(names)
        speeds.append(len(names) / (time.perf_counter() - started))
    return statistics.median(speeds), min(speeds), max(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    files = sorted((ROOT / "data" / "sample").rglob("*.webp"))
    names = [str(files[index % len(files)]) for index in range(args.images)]
    model = load_model(MODEL)
    results = {"in this process": rate(lambda batch: classify_paths(model, MODEL, batch), names)}
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            list(classify_on_cluster(client, MODEL, names[:8]))  # every worker loads the model
            results[f"{workers} worker process{'es' if workers > 1 else ''}"] = rate(
                lambda batch, client=client: classify_on_cluster(client, MODEL, batch), names
            )
    print(f"{args.images} sample images (WebP, 320 px short side), {os.cpu_count()} cores")
    for name, (median, low, high) in results.items():
        print(f"{name:24s} {median:6.1f} images/s (3 rounds: {low:.1f}-{high:.1f})")
    one, two = results["1 worker process"][0], results["2 worker processes"][0]
    print(f"2 workers / 1 worker: {two / one:.2f}x")


if __name__ == "__main__":
    main()
