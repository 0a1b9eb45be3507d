"""`rendernet classify --scheduler` on a real Dask LocalCluster of worker processes on 127.0.0.1: the same rows as
the local run, in order, and none lost or repeated when a worker is killed mid-run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DEFAULT_MODEL, ROOT, sample_files
from rendernet import load_model
from rendernet.batch import classify_paths

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


# The workers' NumPy runs with 1 BLAS thread (Dask's nanny sets OPENBLAS_NUM_THREADS=1), this process with as
# many as the machine has: another summation order, so their floats agree to about 1e-7, not bit for bit.
TOLERANCE = 1e-6


def without_time(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "ms"}


def assert_same_rows(found: list, expected: list) -> None:
    """Rows equal field by field, their numbers (probabilities, confidence) within TOLERANCE."""
    assert len(found) == len(expected)
    for row, other in zip(found, expected, strict=True):
        assert row.keys() == other.keys(), (row, other)
        for key, value in row.items():
            if isinstance(value, dict):
                assert value.keys() == other[key].keys() and all(
                    abs(value[name] - other[key][name]) <= TOLERANCE for name in value
                ), (row, other)
            elif isinstance(value, float):
                assert abs(value - other[key]) <= TOLERANCE, (row, other)
            else:
                assert value == other[key], (row, other)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Sample images and a file that is no image, as the local run sees them."""
    bad = tmp_path_factory.mktemp("bad") / "notes.jpg"
    bad.write_text("not an image")
    return [str(path) for path in sample_files()[::9][:30]] + [str(bad)]


def test_the_cluster_gives_the_local_rows_in_order(cluster, files):
    from rendernet.cluster import classify_on_cluster

    local = [without_time(row) for row in classify_paths(load_model(DEFAULT_MODEL), DEFAULT_MODEL, files)]
    with distributed.Client(cluster) as client:
        remote = [without_time(row) for row in classify_on_cluster(client, DEFAULT_MODEL, files)]
    assert_same_rows(remote, local)
    assert "error" in remote[-1] and "label" in remote[0]


def test_rendernet_classify_scheduler(cluster, files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rendernet.cli",
            "classify",
            "--scheduler",
            cluster.scheduler_address,
            "--model",
            str(DEFAULT_MODEL),
            *files[:6],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    local = list(classify_paths(load_model(DEFAULT_MODEL), DEFAULT_MODEL, files[:6]))
    assert_same_rows(
        [{"probabilities": line["probabilities"]} for line in lines], [{"probabilities": row["probabilities"]} for row in local]
    )


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(cluster, files):
    from rendernet.cluster import classify_on_cluster

    names = files[:-1] * 3  # 90 files: the kill lands with many in flight
    with distributed.Client(cluster) as client:
        rows = classify_on_cluster(client, DEFAULT_MODEL, names)
        received = [next(rows) for _ in range(5)]
        victim = sorted(client.run(os.getpid).items())[0][1]
        os.kill(victim, signal.SIGKILL)
        received += list(rows)
        assert victim not in client.run(os.getpid).values()  # it died mid-run (its nanny started another)
    assert [row["file"] for row in received] == names
    local = {row["file"]: without_time(row) for row in classify_paths(load_model(DEFAULT_MODEL), DEFAULT_MODEL, files[:-1])}
    assert_same_rows([without_time(row) for row in received], [local[row["file"]] for row in received])


def test_a_file_that_kills_every_worker_it_runs_on_is_an_error_row_and_the_run_goes_on(tmp_path):
    """A 58-megapixel PNG on a worker limited to 350 MiB: the nanny kills the worker each time it decodes it, Dask
    gives up after allowed-failures (1 here), twice, and the file gets the error row. The files queued behind it on
    the dying worker, given up with it by Dask, are classified on their second submission (the model's files are
    recomputed, not lost with the worker)."""
    from PIL import Image
    from rendernet.cluster import CLUSTER_WORKER_DIED, classify_on_cluster

    huge = tmp_path / "huge.png"
    Image.new("RGB", (9000, 6500), (120, 130, 140)).save(huge)
    names = [str(sample_files()[0]), str(huge)] + [str(path) for path in sample_files()[1:6]]
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, memory_limit="350MiB"
        ) as limited,
        distributed.Client(limited) as client,
    ):
        rows = list(classify_on_cluster(client, DEFAULT_MODEL, names))
    assert [row["file"] for row in rows] == names
    assert rows[1]["error"] == CLUSTER_WORKER_DIED
    assert all("label" in row for index, row in enumerate(rows) if index != 1), rows


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rendernet.cli", "classify", "--scheduler", "tcp://127.0.0.1:9", str(sample_files()[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_features_on_the_cluster_are_the_local_ones(cluster, tmp_path):
    """The frozen pass over every image and its augmented views (transfer.pooled_features), batch by batch on the
    workers: the same features as in this process. A small Keras backbone stands in for the pretrained one."""
    keras = pytest.importorskip("keras")
    from rendernet_train.data import cache_images, scan
    from rendernet_train.features import pooled_features

    data = tmp_path / "data"
    for name in ("real", "render"):
        (data / name).mkdir(parents=True)
        for path in sample_files(name)[:10]:
            (data / name / path.name).write_bytes(path.read_bytes())
    dataset = scan(data)
    cache_images(dataset, tmp_path / "cache", 224, workers=1, progress=False, crop_sources=True)
    train_examples = dataset.split("train")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu6")(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D(name="pool")(x)))
    with distributed.Client(cluster) as client:
        for examples, augmented in ((dataset.examples, 0), (train_examples, 3)):
            local, local_rows = pooled_features(model, examples, augmented=augmented, seed=5, batch_size=4)
            remote, remote_rows = pooled_features(model, examples, augmented=augmented, seed=5, batch_size=4, client=client)
            assert np.array_equal(local_rows, remote_rows) and local.shape == remote.shape
            np.testing.assert_allclose(local, remote, rtol=0, atol=TOLERANCE)
    assert len(local) == 3 * len(train_examples) > 0


def test_a_worker_with_other_rendernet_code_is_named_on_connect(cluster, tmp_path):
    """A worker whose `rendernet` is a copy with one line changed (same version): connect names it and closes."""
    from rendernet.cluster import connect
    from rendernet.errors import DataError

    altered = tmp_path / "site"
    shutil.copytree(ROOT / "app" / "rendernet", altered / "rendernet")
    with open(altered / "rendernet" / "decision.py", "a") as handle:
        handle.write("\n# a local change\n")
    environment = dict(os.environ, PYTHONPATH=f"{altered}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            cluster.scheduler_address,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--name",
            "altered",
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(3, timeout=60)
            address = next(address for address, info in client.scheduler_info()["workers"].items() if info["name"] == "altered")
        with pytest.raises(DataError) as error:
            connect(cluster.scheduler_address)
        assert f"the Dask worker {address} runs other rendernet code than this client" in str(error.value)
    finally:
        worker.terminate()
        worker.wait(30)


def test_an_exception_on_a_worker_is_that_file_s_row(cluster, tmp_path):
    """Whatever a file's task raises on a worker (a decoder bug, say) is that file's error row, not the run's end."""
    from rendernet.cluster import outcome

    with distributed.Client(cluster) as client:
        broken = client.submit(lambda: (_ for _ in ()).throw(ValueError("a decoder bug")), pure=False)
        row = outcome(client, None, "x.jpg", broken, distributed.KilledWorker)
    assert row == {"file": "x.jpg", "error": "on the cluster: ValueError: a decoder bug"}


def test_a_lost_scheduler_ends_the_run_with_one_line_and_keeps_the_rows(tmp_path):
    script = tmp_path / "cluster.py"
    script.write_text(
        "import time, distributed\n"
        "if __name__ == '__main__':\n"
        "    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host='127.0.0.1',"
        " dashboard_address=None) as cluster:\n"
        "        print(cluster.scheduler_address, flush=True)\n"
        "        time.sleep(600)\n"
    )
    scheduler = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address = scheduler.stdout.readline().strip()
        names = [str(path) for path in sample_files()[:40]] * 5
        run = subprocess.Popen(
            [sys.executable, "-m", "rendernet.cli", "classify", "--scheduler", address, *names],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = run.stdout.readline()  # the run is under way
        os.killpg(scheduler.pid, signal.SIGKILL)
        lost_at = time.monotonic()
        rest, errors = run.communicate(timeout=60)
        assert time.monotonic() - lost_at < 30
    finally:
        if scheduler.poll() is None:
            os.killpg(scheduler.pid, signal.SIGKILL)
    rows = [json.loads(line) for line in [first, *rest.splitlines()]]
    assert run.returncode == 1 and 1 <= len(rows) < len(names)
    assert [row["file"] for row in rows] == names[: len(rows)] and all("label" in row for row in rows), rows
    assert errors.strip().count("\n") == 0 and errors.startswith("error: lost the Dask scheduler"), errors
