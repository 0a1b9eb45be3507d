"""build.py: the trust chain (pinned runtime sha256, wheels against pyodide-lock.json) and the bundle's shape."""

import functools
import gzip
import http.client
import http.server
import json
import re
import shutil
import threading
import zipfile

import pytest
from conftest import DEFAULT_MODEL

import build


@pytest.fixture(scope="module")
def pyodide_dir(tmp_path_factory):
    """A --pyodide-dir folder: the runtime files and the two wheels, fetched through the build cache."""
    folder = tmp_path_factory.mktemp("pyodide")
    runtime = build.npm_package(build.PYODIDE_NPM, build.DEFAULT_CACHE, tmp_path_factory.mktemp("unpacked"))
    for name in build.RUNTIME_SHA256:
        shutil.copyfile(runtime / name, folder / name)
    for wheel in build.pypi_wheels(build.DEFAULT_CACHE).glob("*.whl"):
        shutil.copyfile(wheel, folder / wheel.name)
    return folder


def run_build(tmp_path, pyodide_dir, capsys):
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(DEFAULT_MODEL), "--pyodide-dir", str(pyodide_dir)])
    return code, capsys.readouterr()


def test_bundle_from_a_local_pyodide_dir(tmp_path, pyodide_dir, capsys):
    code, output = run_build(tmp_path, pyodide_dir, capsys)
    assert code == 0, output.err
    dist = tmp_path / "dist"
    top = {path.name.split("-")[0] for path in dist.iterdir() if path.suffix != ".br"}  # .br: when brotli imports
    assert top == {"index.html", "index.html.gz", "sw.js", "sw.js.gz", "pyodide", "pyscript", "app"}
    runtime, app = next(dist.glob("pyodide-*")), next(dist.glob("app-*"))
    lock = json.loads((runtime / "pyodide-lock.json").read_text())
    assert sorted(lock["packages"]) == ["numpy", "pillow"]
    worker = json.loads((app / "worker.json").read_text())
    assert worker["interpreter"] == f"../{runtime.name}/pyodide.mjs" and worker["packages_cache"] == "passthrough"
    pyscript = next(dist.glob("pyscript-*"))
    main = json.loads((app / "main.json").read_text())  # MicroPython, with the decision rule
    assert main["interpreter"] == f"../{pyscript.name}/micropython.mjs" and (pyscript / "micropython.wasm").exists()
    assert sorted(main["files"]) == [f"./rendernet/{name}" for name in sorted(build.CORE_ON_MAIN_THREAD)]
    assert (app / "rendernet" / "layers.py").read_bytes() == (build.CORE_PACKAGE / "layers.py").read_bytes()
    page = (dist / "index.html").read_text()
    assert f'src="./{app.name}/main.py"' in page and "__APP__" not in page and "__PYSCRIPT__" not in page
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
    for entry in lock["packages"].values():
        wheel = runtime / entry["file_name"]
        assert build.sha256_file(wheel) == entry["sha256"]  # Pyodide refuses a wheel that does not match
        assert stored_files(wheel) <= listed
        with zipfile.ZipFile(pyodide_dir / entry["file_name"]) as original:
            assert len(original.namelist()) > len(stored_files(wheel))
    assert "numpy/_core/_multiarray_umath.cpython-312-wasm32-emscripten.so" in stored_files(next(runtime.glob("numpy-*.whl")))
    assert build.main(["--out", str(tmp_path / "full"), "--model", str(DEFAULT_MODEL), "--pyodide-dir",
                       str(pyodide_dir), "--full-runtime"]) == 0
    full = next((tmp_path / "full").glob("pyodide-*"))
    assert (full / "python_stdlib.zip").read_bytes() == (pyodide_dir / "python_stdlib.zip").read_bytes()


def test_folders_are_named_by_their_content(tmp_path, pyodide_dir, capsys):
    """A rebuild with another model renames the app folder only; the service worker lists every file's sha256."""
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
    files = [path for path in (tmp_path / "dist").rglob("*")
             if path.is_file() and not path.name.startswith("sw.js") and path.suffix not in build.PRECOMPRESSED]
    assert all(build.sha256_file(path) in worker for path in files)


def edit(path, change):
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(layers=[]), "layers must be a non-empty list"),
    (lambda m: m["input"].update(shape=[-1, -1, 3]), "input.shape must be [height, width, channels]"),
    (lambda m: m.update(threshold="high"), "threshold must be null or a number"),
    (lambda m: m.update(classes="realrender"), "classes must be a non-empty list"),
    (lambda m: m.update(classes=["a", "b", "c"], threshold=None), "classes names 3 classes, the network outputs 2"),
    (lambda m: m.pop("classes"), "required key 'classes' is missing"),
])
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


def test_tampered_npm_cache_is_refused_with_the_command_that_clears_it(tmp_path):
    build.npm_package(build.PYSCRIPT_NPM, build.DEFAULT_CACHE, tmp_path / "fetched")  # fetched once, if not yet
    cache = tmp_path / "cache"
    shutil.copytree(build.DEFAULT_CACHE / "_pyscript_core_0.6.66", cache / "_pyscript_core_0.6.66",
                    ignore=shutil.ignore_patterns("package"))
    tarball = next((cache / "_pyscript_core_0.6.66").glob("*.tgz"))
    tarball.write_bytes(tarball.read_bytes()[:-100] + bytes(100))
    with pytest.raises(build.BuildError) as error:
        build.npm_package(build.PYSCRIPT_NPM, cache, tmp_path / "unpacked")
    assert "does not match npm's published integrity" in str(error.value)
    assert f"rm -rf {cache / '_pyscript_core_0.6.66'}" in str(error.value)
    assert not (tmp_path / "unpacked").exists()


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
    code = build.main(["--out", str(tmp_path / "dist"), "--model", str(tmp_path / "nothing"),
                       "--pyodide-dir", str(pyodide_dir)])
    assert code == 1 and "lacks model.json, weights.npz" in capsys.readouterr().err


def test_missing_npm_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match=re.escape("`npm` is not installed; it is needed to fetch the npm "
                                                         "package @pyscript/core@0.6.66")):
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
