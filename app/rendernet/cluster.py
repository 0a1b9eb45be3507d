"""Classify files on the workers of a Dask distributed cluster: `rendernet classify --scheduler tcp://HOST:8786`.

The client sends the model's two files to the cluster once, as a task's result: workers fetch it from each other,
and the scheduler runs it again if every worker holding it dies. Each worker loads the model the first time a task
needs it and keeps it. A task classifies one file by its path with evaluate.classify_path, as `--jobs` does on one
machine, so **the files must be readable at the same path on every worker** (shared storage: NFS, SMB, a mounted
bucket); a worker that cannot see a file gives that file an error row. Results come back in input order, with a
bounded number of files in flight.

A worker lost mid-run (killed, crashed, its machine gone): Dask runs its tasks again on the other workers, so no
row is lost or repeated. Dask gives up on a task after `distributed.scheduler.allowed-failures` (3 by default)
workers died while it ran *or waited in their queue*, so a file queued behind one that kills workers (a decoder
crash, memory) can be given up with it: every file given up is submitted once more, and only a file given up twice
gets the error row CLUSTER_WORKER_DIED; the run goes on.

Needs the `cluster` extra (`pip install "rendernet[cluster]"`, dask[distributed]) on the client and on every
worker, with the same rendernet: tasks refer to this module's functions by name. `connect` checks it (Dask's
get_versions for the version, `core_fingerprint` for the code) and names the first worker that differs.

Any other exception a file's task raises on a worker is that file's error row. A scheduler lost mid-run ends the
run with one line (DataError) once Dask gives up reconnecting; the rows already given are kept.
"""

import hashlib
import logging
from collections import deque
from concurrent.futures import CancelledError
from pathlib import Path

from .batch import classify_path, printable
from .errors import DataError, ModelError
from .manifest import MANIFEST_FILE, REFERENCE_FILE, WEIGHTS_FILE, read_model_files
from .version import __version__

ALLOCATOR_KEEPS_BYTES = 2**30  # see keep_freed_memory
IN_FLIGHT_PER_THREAD = 4  # files queued per worker thread: enough to keep every worker busy, few to redo if one dies
CONNECT_SECONDS = 20
CLUSTER_WORKER_DIED = "the cluster gave up on this file twice: workers died each time it ran (Dask's allowed-failures)"
_models = {}  # on a worker: the manifest's sha256 -> the loaded model


def keep_freed_memory() -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's thresholds so that every
    large NumPy temporary of the forward pass is a fresh mmap: 41 ms an image instead of 19 (bench/cluster.py's
    machine). Let glibc keep up to ALLOCATOR_KEEPS_BYTES of freed memory for reuse instead (Linux, glibc only)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-1, ALLOCATOR_KEEPS_BYTES)  # M_TRIM_THRESHOLD
            libc.mallopt(-3, ALLOCATOR_KEEPS_BYTES)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):  # not glibc: its own defaults
            pass


def model_on_worker(files: dict):
    """The model of `files` ({name: bytes}), loaded once per worker process."""
    from .model import model_from_bytes

    key = hashlib.sha256(files[MANIFEST_FILE]).hexdigest()  # the manifest names the weights' sha256
    if key not in _models:
        keep_freed_memory()
        _models[key] = model_from_bytes(files[MANIFEST_FILE], files[WEIGHTS_FILE], files.get(REFERENCE_FILE))
    return _models[key]


def model_files(files: dict) -> dict:
    """The model's files as a task's result: workers fetch it from each other, and it can be recomputed."""
    return files


def classify_on_worker(files: dict, name: str) -> dict:
    return classify_path(model_on_worker(files), name)


def core_fingerprint() -> dict:
    """This process's rendernet: its version and the sha256 of its core package's files (name and bytes of each)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"version": __version__, "core_sha256": digest.hexdigest()}


def check_workers(client) -> None:
    """DataError naming the first worker whose rendernet is not this client's: another version (Dask's
    get_versions), none, or other code under the same version (core_fingerprint)."""
    mine = core_fingerprint()
    workers = client.get_versions(packages=["rendernet"])["workers"]
    for address, info in sorted(workers.items()):
        theirs = info.get("packages", {}).get("rendernet")
        if theirs != mine["version"]:
            raise DataError(
                f"the Dask worker {address} has rendernet {theirs or 'not installed'}, this client {mine['version']}: "
                "install the same rendernet on every worker"
            )
    for address, theirs in sorted(client.run(core_fingerprint, on_error="return").items()):
        if theirs != mine:
            found = f"{type(theirs).__name__}: {theirs}" if isinstance(theirs, Exception) else f"core {theirs['core_sha256'][:12]}"
            raise DataError(
                f"the Dask worker {address} runs other rendernet code than this client ({found}; here core "
                f"{mine['core_sha256'][:12]}): install the same rendernet on every worker"
            )


def connect(scheduler: str):
    """A dask.distributed Client of the scheduler at `scheduler` (tcp://HOST:8786) whose workers run this client's
    rendernet (check_workers); DataError when unreachable or when a worker differs. For the command line: Dask's own
    log lines (tracebacks from its background threads when the scheduler goes) are silenced, since what they
    mean reaches the user as rendernet's one-line messages."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise DataError('--scheduler needs Dask: pip install "rendernet[cluster]" (dask[distributed])') from None
    for handler in logging.getLogger("distributed").handlers:  # Dask's own; its child loggers propagate to them
        handler.setLevel(logging.CRITICAL)
    try:
        client = Client(scheduler, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as error:
        raise DataError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
    try:
        check_workers(client)
    except BaseException:
        client.close()
        raise
    return client


def classify_on_cluster(scheduler, model, names):
    """Yield classify_path's result for each name, in order, classified on the cluster's workers. `scheduler`: an
    address or a connected Client; `model`: a model folder or .zip."""
    from dask.distributed import KilledWorker

    files = read_model_files(model)
    if not {MANIFEST_FILE, WEIGHTS_FILE} <= set(files):
        raise ModelError(f"{model} has no {MANIFEST_FILE} or {WEIGHTS_FILE}")
    model_on_worker(files)  # checked here first: a bad model is one line, not an error on every file
    client = scheduler if not isinstance(scheduler, str) else connect(scheduler)
    try:
        shared = client.submit(model_files, files, pure=False)  # a task, not scattered data: if every worker that
        #                                                         holds it dies, the scheduler runs it again
        calls = ((classify_on_worker, shared, name) for name in names)
        for call, future in submitted_in_order(client, calls, IN_FLIGHT_PER_THREAD):
            yield outcome(client, shared, call[-1], future, KilledWorker)
    finally:
        if isinstance(scheduler, str):
            client.close()


def submitted_in_order(client, calls, per_thread: int):
    """Submit each call (function, *arguments) to the Dask client, at most `per_thread` per worker thread in flight
    at once, and yield (call, future) in the calls' order: bounded memory on both sides for any number of calls."""
    limit = per_thread * max(1, sum(client.nthreads().values()))
    in_flight = deque()
    for call in calls:
        in_flight.append((call, client.submit(*call, pure=False)))
        if len(in_flight) >= limit:
            yield in_flight.popleft()
    while in_flight:
        yield in_flight.popleft()


def outcome(client, shared, name: str, future, killed_worker) -> dict:
    """The file's row; a file Dask gave up on is submitted once more (it may only have waited behind a killer). An
    exception the task raised is the file's error row; a lost scheduler ends the run (DataError)."""
    for attempt in range(2):
        try:
            return (future if attempt == 0 else client.submit(classify_on_worker, shared, name, pure=False)).result()
        except killed_worker:
            continue
        except (CancelledError, OSError, TimeoutError) as error:
            if client.status == "running":
                return {"file": printable(name), "error": f"on the cluster: {type(error).__name__}: {error}"}
            reason = getattr(error, "reason", None) or type(error).__name__
            raise DataError(f"lost the Dask scheduler ({reason}): the rows above were classified, the rest were not") from None
        except Exception as error:  # raised by the task on a worker: this file's row, and the run goes on
            return {"file": printable(name), "error": f"on the cluster: {type(error).__name__}: {error}"}
    return {"file": printable(name), "error": CLUSTER_WORKER_DIED}
