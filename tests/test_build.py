"""build.py: the trust chain (pinned runtime sha256, wheels against pyodide-lock.json) and the bundle's shape."""

import json
import shutil

import pytest
from conftest import DEFAULT_MODEL

import build


@pytest.fixture(scope="module")
def pyodide_dir(tmp_path_factory):
    """A --pyodide-dir folder: the runtime files and the two wheels, fetched through the build cache."""
    folder = tmp_path_factory.mktemp("pyodide")
    runtime = build.npm_package(build.PYODIDE_NPM, build.DEFAULT_CACHE)
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
    lock = json.loads((dist / "pyodide" / "pyodide-lock.json").read_text())
    assert sorted(lock["packages"]) == ["numpy", "pillow"]
    config = json.loads((dist / "pyscript.json").read_text())
    assert config["interpreter"] == "./pyodide/pyodide.mjs" and config["packages_cache"] == "passthrough"
    assert (dist / "rendernet" / "layers.py").read_bytes() == (build.CORE_PACKAGE / "layers.py").read_bytes()
    assert "sw.js" in {path.name for path in dist.iterdir()}
    assert "total" in output.out and "gzip" in output.out


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
