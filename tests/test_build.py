"""build.py: the trust chain (pinned runtime sha256, wheels against pyodide-lock.json) and the bundle's shape."""

import contextlib
import functools
import gzip
import http.client
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import DEFAULT_MODEL
from rendernet.decision import SURE

import build


@pytest.fixture(scope="module")
def pyodide_dir(tmp_path_factory):
    """A --pyodide-dir folder: the runtime files, the two wheels and OpenBLAS, fetched through the build cache."""
    folder = tmp_path_factory.mktemp("pyodide")
    runtime = build.npm_package(build.PYODIDE_NPM, build.DEFAULT_CACHE, tmp_path_factory.mktemp("unpacked"))
    for name in build.RUNTIME_SHA256:
        shutil.copyfile(runtime / name, folder / name)
    for package in build.pypi_wheels(build.DEFAULT_CACHE).glob("*.*"):
        shutil.copyfile(package, folder / package.name)
    return folder


def run_build(tmp_path, pyodide_dir, capsys):
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir)])
    return code, capsys.readouterr()


def test_bundle_from_a_local_pyodide_dir(tmp_path, pyodide_dir, capsys):
    code, output = run_build(tmp_path, pyodide_dir, capsys)
    assert code == 0, output.err
    dist = tmp_path / "dist"
    top = {path.name.split("-")[0] for path in dist.iterdir() if path.suffix != ".br"}  # .br: when brotli imports
    assert top == {"index.html", "index.html.gz", "sw.js", "sw.js.gz", "pyodide", "pyscript", "app", ".rendernet"}
    runtime, app = next(dist.glob("pyodide-*")), next(dist.glob("app-*"))
    lock = json.loads((runtime / "pyodide-lock.json").read_text())
    assert sorted(lock["packages"]) == ["numpy", "openblas", "pillow"]
    assert build.sha256_file(runtime / lock["packages"]["openblas"]["file_name"]) == lock["packages"]["openblas"]["sha256"]
    worker = json.loads((app / "worker.json").read_text())
    assert worker["interpreter"] == f"../{runtime.name}/pyodide.mjs" and worker["packages_cache"] == "passthrough"
    pyscript = next(dist.glob("pyscript-*"))
    main = json.loads((app / "main.json").read_text())  # MicroPython, with the decision rule
    assert main["interpreter"] == f"./{pyscript.name}/micropython.mjs" and (pyscript / "micropython.wasm").exists()
    assert sorted(main["files"]) == [f"./rendernet/{name}" for name in sorted(build.CORE_ON_MAIN_THREAD)]
    assert (app / "rendernet" / "layers.py").read_bytes() == (build.CORE_PACKAGE / "layers.py").read_bytes()
    page = (dist / "index.html").read_text()
    assert f'src="./{app.name}/main.py"' in page and "__" not in page
    assert f'type="range" min="50" max="99" value="{round(SURE * 100)}"' in page  # decision.py's default
    assert "total" in output.out and "gzip" in output.out


PYTHON_312_PYC = (3531).to_bytes(2, "little") + b"\r\n" + (0b01).to_bytes(4, "little")  # magic, unchecked hash


def stored_files(path):
    """The files of a trimmed zip, each .pyc named as its source (.py); checks they are stored and compiled."""
    with zipfile.ZipFile(path) as archive:
        assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_STORED}
        names = {name for name in archive.namelist() if not name.endswith("/") and ".dist-info/" not in name}
        assert not any(name.endswith(".py") for name in names), "every module ships as bytecode"
        assert all(archive.read(name)[:8] == PYTHON_312_PYC for name in names if name.endswith(".pyc"))
    return {name.removesuffix("c") if name.endswith(".pyc") else name for name in names}


def test_runtime_is_trimmed_to_the_listed_files_and_the_lock_knows_the_new_wheels(tmp_path, pyodide_dir, capsys):
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    runtime = next((tmp_path / "dist").glob("pyodide-*"))
    lock = json.loads((runtime / "pyodide-lock.json").read_text())
    listed = build.page_modules()
    shipped = stored_files(runtime / "python_stdlib.zip")
    assert "json/__init__.py" in shipped and "xmlrpc/client.py" not in shipped and shipped <= listed
    for entry in (entry for entry in lock["packages"].values() if entry["package_type"] == "package"):
        wheel = runtime / entry["file_name"]
        assert build.sha256_file(wheel) == entry["sha256"]  # Pyodide refuses a wheel that does not match
        assert stored_files(wheel) <= listed
        with zipfile.ZipFile(pyodide_dir / entry["file_name"]) as original:
            assert len(original.namelist()) > len(stored_files(wheel))
    assert "numpy/_core/_multiarray_umath.cpython-312-wasm32-emscripten.so" in stored_files(next(runtime.glob("numpy-*.whl")))
    assert (
        build.main(
            ["--out", str(tmp_path / "full"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir), "--full-runtime"]
        )
        == 0
    )
    full = next((tmp_path / "full").glob("pyodide-*"))
    assert (full / "python_stdlib.zip").read_bytes() == (pyodide_dir / "python_stdlib.zip").read_bytes()


def test_folders_are_named_by_their_content(tmp_path, pyodide_dir, capsys):
    """A rebuild with another model renames the app folder only; the service worker lists every other file's sha256
    and the page carries the service worker's."""
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    first = sorted(path.name for path in (tmp_path / "dist").iterdir())
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    edit(model / "model.json", lambda manifest: manifest.update(threshold=0.25))
    assert build.main(["--out", str(tmp_path / "dist"), "--model", str(model), "--pyodide-dir", str(pyodide_dir)]) == 0
    second = sorted(path.name for path in (tmp_path / "dist").iterdir())
    assert [name for name in first if name not in second] == [name for name in first if name.startswith("app-")]
    assert [name for name in first if name.startswith("py")] == [name for name in second if name.startswith("py")]
    worker = (tmp_path / "dist" / "sw.js").read_text()
    files = [
        path
        for path in (tmp_path / "dist").rglob("*")
        if path.is_file()
        and not path.name.startswith("sw.js")
        and path.suffix not in build.PRECOMPRESSED
        and path.name not in (build.BUILD_MARK, "index.html")
    ]
    assert all(build.sha256_file(path) in worker for path in files)
    assert build.sha256_file(tmp_path / "dist" / "sw.js") in (tmp_path / "dist" / "index.html").read_text()


def edit(path, change):
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(layers=[]), "layers must be a non-empty list"),
        (lambda m: m["input"].update(shape=[-1, -1, 3]), "input.shape must be [height, width, channels]"),
        (lambda m: m.update(threshold="high"), "threshold must be null or a number"),
        (lambda m: m.update(classes="realrender"), "classes must be a non-empty list"),
        (lambda m: m.update(classes=["a", "b", "c"], threshold=None), "classes names 3 classes, the network outputs 2"),
        (lambda m: m.pop("classes"), "required key 'classes' is missing"),
        (lambda m: m.update(macs=None), "macs must be an integer >= 0, found None"),
    ],
)
def test_broken_model_is_refused_and_dist_is_untouched(tmp_path, pyodide_dir, capsys, change, message):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("the previous site")
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    edit(model / "model.json", change)
    code = build.main(["--out", str(dist), "--model", str(model), "--pyodide-dir", str(pyodide_dir)])
    assert code == 1 and message in capsys.readouterr().err
    assert [path.name for path in dist.iterdir()] == ["index.html"]
    assert (dist / "index.html").read_text() == "the previous site"


@pytest.mark.network
def test_tampered_npm_cache_is_refused_with_the_command_that_clears_it(tmp_path):
    build.npm_package(build.PYSCRIPT_NPM, build.DEFAULT_CACHE, tmp_path / "fetched")  # fetched once, if not yet
    cache = tmp_path / "cache"
    shutil.copytree(
        build.DEFAULT_CACHE / "_pyscript_core_0.6.66", cache / "_pyscript_core_0.6.66", ignore=shutil.ignore_patterns("package")
    )
    tarball = next((cache / "_pyscript_core_0.6.66").glob("*.tgz"))
    tarball.write_bytes(tarball.read_bytes()[:-100] + bytes(100))
    with pytest.raises(build.BuildError) as error:
        build.npm_package(build.PYSCRIPT_NPM, cache, tmp_path / "unpacked")
    assert "does not match npm's published integrity" in str(error.value)
    assert f"rm -rf {cache / '_pyscript_core_0.6.66'}" in str(error.value)
    assert not (tmp_path / "unpacked").exists()


@pytest.mark.parametrize(
    "metrics, message",
    [
        ({"test": []}, "metrics.json: test must be an object, found []"),
        ({"test": {"accuracy": "high"}}, "metrics.json: test.accuracy must be a number or null"),
        ({"held_out": {"povray": {"count": -3}}}, "metrics.json: held_out.povray.count must be an integer >= 0"),
        ({"test": {"confusion": [[1, "2"]]}}, "metrics.json: test.confusion must be rows of integers"),
        ("{not json", "metrics.json is not valid JSON"),
    ],
)
def test_metrics_the_page_cannot_show_are_refused(tmp_path, pyodide_dir, capsys, metrics, message):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    (model / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(model), "--pyodide-dir", str(pyodide_dir)])
    assert code == 1 and message in capsys.readouterr().err and not (tmp_path / "dist").exists()


def test_tampered_wheel_stops_the_build(tmp_path, pyodide_dir, capsys):
    folder = tmp_path / "pyodide"
    shutil.copytree(pyodide_dir, folder)
    wheel = next(folder.glob("numpy-*.whl"))
    wheel.write_bytes(wheel.read_bytes()[:-10] + b"0123456789")
    code, output = run_build(tmp_path, folder, capsys)
    assert code == 1
    assert "does not match pyodide-lock.json's" in output.err and wheel.name in output.err
    assert not (tmp_path / "dist").exists()


def test_tampered_runtime_stops_the_build(tmp_path, pyodide_dir, capsys):
    folder = tmp_path / "pyodide"
    shutil.copytree(pyodide_dir, folder)
    (folder / "pyodide.mjs").write_text("// not pyodide\n")
    code, output = run_build(tmp_path, folder, capsys)
    assert code == 1 and "pyodide.mjs: sha256" in output.err and "Pyodide 0.27.7" in output.err


def test_missing_model_is_a_clear_error(tmp_path, pyodide_dir, capsys):
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(tmp_path / "nothing"), "--pyodide-dir", str(pyodide_dir)])
    assert code == 1 and "lacks model.json, weights.npz" in capsys.readouterr().err


def test_missing_npm_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        build.BuildError, match=re.escape("`npm` is not installed; it is needed to fetch the npm package @pyscript/core@0.6.66")
    ):
        build.npm_package(build.PYSCRIPT_NPM, tmp_path / "cache", tmp_path / "unpacked")


def test_precompressed_copies_are_served_with_cache_headers(tmp_path, pyodide_dir, capsys):
    """build.py writes a .gz beside every file that compresses; --serve's handler sends it to a browser that
    accepts gzip (and the file itself to one that does not), caches the content-named folders for a year and
    has index.html revalidated."""
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    dist = tmp_path / "dist"
    wasm = next(dist.glob("pyodide-*/pyodide.asm.wasm"))
    assert gzip.decompress(wasm.with_name(wasm.name + ".gz").read_bytes()) == wasm.read_bytes()
    assert all(copy.stat().st_size < 0.95 * copy.with_suffix("").stat().st_size for copy in dist.rglob("*.gz"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(build.Handler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:

        def get(path, **headers):
            connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response, response.read()

        path = "/" + wasm.relative_to(dist).as_posix()
        response, body = get(path, **{"Accept-Encoding": "gzip, deflate"})
        assert response.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == wasm.read_bytes()
        assert response.getheader("Content-Type") == "application/wasm"
        assert response.getheader("Cache-Control") == "public, max-age=31536000, immutable"
        response, body = get(path)
        assert response.getheader("Content-Encoding") is None and body == wasm.read_bytes()
        response, body = get("/", **{"Accept-Encoding": "gzip"})
        assert response.getheader("Cache-Control") == "no-cache"
        assert gzip.decompress(body) == (dist / "index.html").read_bytes()
    finally:
        server.shutdown()


# ---------------------------------------------------------------- deployment: modes, --out, leftovers, errors

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: serves as another user, mounts a tmpfs")


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@contextlib.contextmanager
def tmpfs(size, *options):
    """A small tmpfs mounted for the test (root only): a disk that fills up, or a read-only folder."""
    folder = Path(tempfile.mkdtemp())
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()


def modes(dist):
    return {stat.S_IMODE(path.stat().st_mode) for path in [dist, *dist.rglob("*")] if path.is_dir()}, {
        stat.S_IMODE(path.stat().st_mode) for path in dist.rglob("*") if path.is_file()
    }


def test_dist_follows_the_umask(tmp_path, pyodide_dir, capsys):
    """Folders and files get the modes `mkdir` and `cp` would give them: world-readable under umask 022, not under 027."""
    with umask(0o022):
        assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    assert modes(tmp_path / "dist") == ({0o755}, {0o644})
    with umask(0o027):
        assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    assert modes(tmp_path / "dist") == ({0o750}, {0o640})


SERVE_AS_NOBODY = """
import functools, http.server, os, sys
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler,
                                                                              directory=sys.argv[1]))
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # after the imports: this Python's files may be root's alone
print(server.server_address[1], flush=True)
server.serve_forever()
"""  # the standard library's static server, running as user nobody


@needs_root
def test_dist_is_served_by_a_server_running_as_another_user(pyodide_dir, capsys):
    parent = Path(tempfile.mkdtemp())
    parent.chmod(0o755)  # as a web root's parent would be
    try:
        with umask(0o022):
            assert (
                build.main(["--out", str(parent / "dist"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir)]) == 0
            )
        dist = parent / "dist"
        server = subprocess.Popen([sys.executable, "-c", SERVE_AS_NOBODY, str(dist)], stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            paths = [
                "/",
                "/sw.js",
                *(
                    "/" + path.relative_to(dist).as_posix()
                    for path in [next(dist.glob("app-*/model/weights.npz")), next(dist.glob("pyodide-*/pyodide.asm.wasm"))]
                ),
            ]
            for path in paths:
                connection = http.client.HTTPConnection("127.0.0.1", port)
                connection.request("GET", path)
                assert connection.getresponse().status == 200, f"{path} is not served to user nobody"
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(parent)


def test_out_folder_holding_other_files_is_refused_and_kept(tmp_path, pyodide_dir, capsys):
    dist = tmp_path / "dist"
    (dist / "docs").mkdir(parents=True)
    (dist / "CNAME").write_text("example.org")
    (dist / "docs" / "important.txt").write_text("keep me")
    code, output = run_build(tmp_path, pyodide_dir, capsys)
    assert code == 1 and output.err.count("\n") == 1
    assert "holds files that are not a rendernet build (CNAME, docs)" in output.err
    assert (dist / "CNAME").read_text() == "example.org" and (dist / "docs" / "important.txt").read_text() == "keep me"
    (dist / "CNAME").unlink()
    shutil.rmtree(dist / "docs")
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0  # an empty folder is fine, and so is a build of ours
    (dist / "extra.txt").write_text("added to a deployed build")
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    assert not (dist / "extra.txt").exists()


def test_out_that_is_a_file_is_one_clear_line(tmp_path, pyodide_dir, capsys):
    (tmp_path / "dist").write_text("not a folder")
    code, output = run_build(tmp_path, pyodide_dir, capsys)
    assert code == 1
    assert output.err == (
        f"build failed: --out {tmp_path / 'dist'} is a file, not a folder; name a folder (it is created if missing)\n"
    )
    assert (tmp_path / "dist").read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [tmp_path / "dist"]


def test_a_killed_build_leaves_nothing_after_the_next_build(tmp_path, pyodide_dir, capsys):
    """SIGKILL a real build while it stages; the next build removes what it left (and keeps a running build's)."""
    build_command = [
        sys.executable,
        str(build.ROOT / "build.py"),
        "--out",
        str(tmp_path / "dist"),
        "--model",
        str(DEFAULT_MODEL),
        "--pyodide-dir",
        str(pyodide_dir),
    ]
    for _ in range(2):
        process = subprocess.Popen(build_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not any(tmp_path.glob(".rendernet-staging-*/pyodide/*")) and process.poll() is None:
            time.sleep(0.01)
        process.kill()
        process.wait()
    (tmp_path / ".dist-abcd1234").mkdir()  # as earlier versions named their staging folder
    running = tmp_path / f".rendernet-staging-{os.getppid()}-x"  # a process that runs: pytest's parent
    running.mkdir()
    left = {path.name for path in tmp_path.iterdir()} - {"dist", running.name}
    assert len(left) >= 3, left
    assert run_build(tmp_path, pyodide_dir, capsys)[0] == 0
    assert {path.name for path in tmp_path.iterdir()} == {"dist", running.name}


def test_model_json_that_is_a_folder_is_one_clear_line(tmp_path, pyodide_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    (model / "model.json").unlink()
    (model / "model.json").mkdir()
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(model), "--pyodide-dir", str(pyodide_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"build failed: the model cannot be bundled: cannot read {model / 'model.json'}: Is a directory\n"


def test_port_out_of_range_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exit:
        build.main(["--port", "70000"])
    assert exit.value.code == 2 and "'70000' is not a port number (0-65535" in capsys.readouterr().err


@needs_root
def test_full_disk_and_read_only_parent_are_one_clear_line(pyodide_dir, capsys):
    with tmpfs("4m") as small:
        code = build.main(["--out", str(small / "dist"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir)])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("build failed: No space left on device") and err.count("\n") == 1
        assert "free some space and build again" in err and list(small.iterdir()) == []  # nothing left behind
    with tmpfs("1m", "ro") as read_only:
        code = build.main(
            ["--out", str(read_only / "site" / "dist"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir)]
        )
        err = capsys.readouterr().err
        assert code == 1 and err == f"build failed: Read-only file system ({read_only / 'site'}); choose --out on a writable disk\n"


def test_errors_are_never_cached(tmp_path):
    """A file missing from a deploy caught half-way is a 404 the browser asks for again, not one kept for a year."""
    dist = tmp_path / "dist"
    (dist / "app-0123456789ab").mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(build.Handler, directory=str(dist)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
        connection.request("GET", "/app-0123456789ab/main.py")
        response = connection.getresponse()
        assert response.status == 404 and response.getheader("Cache-Control") == "no-store"
    finally:
        server.shutdown()


def test_without_brotli_the_size_report_says_so_and_how_to_add_it(tmp_path):
    (tmp_path / "app.js").write_bytes(b"x" * 5000)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"x" * 5000))
    report = build.size_report(tmp_path)
    assert "gzip copies only, no brotli" in report and "-m pip install brotli" in report
    (tmp_path / "app.js.br").write_bytes(b"tiny")
    assert "no brotli" not in build.size_report(tmp_path)


def test_the_page_calls_only_what_its_worker_exports():
    """rendernet.calls names the worker's calls once: worker.py exports them and defines each; main.py calls no other."""
    import re

    from rendernet.calls import WORKER_CALLS

    worker = (build.APP / "worker.py").read_text()
    assert "__export__ = list(WORKER_CALLS)" in worker
    assert all(re.search(rf"^(async )?def {name}\(", worker, re.MULTILINE) for name in WORKER_CALLS)
    called = set(
        re.findall(r"(?:page\.worker|page\.workers\[\w+\]|worker\.sync|\.sync)\.(\w+)\(", (build.APP / "main.py").read_text())
    )
    assert called and called <= set(WORKER_CALLS), called - set(WORKER_CALLS)
