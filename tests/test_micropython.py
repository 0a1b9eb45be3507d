"""The page's main thread runs MicroPython: main.py has to parse there, and the one decision rule has to decide
there exactly as CPython does, since the screen (MicroPython) and the CSV and CLI (CPython) show the same results.

Runs the bundle's own MicroPython (npm, checked like the build's other packages) in Node.
"""

import json
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
from rendernet.decision import decide

import build

RUNNER = """
import { loadMicroPython } from "%s";
import fs from "fs";
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const output = [];
const mp = await loadMicroPython({ stdout: (line) => output.push(line), stderr: (line) => output.push(line) });
for (const [path, text] of Object.entries(job.files)) {
  const folders = path.split("/").slice(0, -1);
  folders.forEach((_, depth) => { try { mp.FS.mkdir("/" + folders.slice(0, depth + 1).join("/")); } catch {} });
  mp.FS.writeFile("/" + path, text);
}
try { await mp.runPythonAsync(job.code); } catch (error) { output.push(error.message); }
console.log(output.join("\\n"));
"""


@pytest.fixture(scope="module")
def micropython(tmp_path_factory):
    """Run Python code in MicroPython with the main thread's core files; returns what it printed."""
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    folder = build.npm_package(build.MICROPYTHON_NPM, build.DEFAULT_CACHE, tmp_path_factory.mktemp("micropython"))
    runner = folder / "run.mjs"
    runner.write_text(RUNNER % (folder / "micropython.mjs").as_uri())
    files = {f"rendernet/{name}": (build.CORE_PACKAGE / name).read_text() for name in build.CORE_ON_MAIN_THREAD}

    def run(code: str) -> str:
        job = json.dumps({"files": files, "code": "import sys\nsys.path.append('/')\n" + code})
        return subprocess.run(["node", str(runner)], input=job, capture_output=True, text=True, check=True).stdout

    return run


def test_main_py_parses_in_micropython(micropython):
    source = (build.APP / "main.py").read_text()
    as_function = "async def page():\n" + textwrap.indent(source, "    ")  # where its top-level await is allowed
    assert micropython(f"compile({as_function!r}, 'main.py', 'exec')\nprint('parsed')").strip() == "parsed"


def test_micropython_decides_as_cpython(micropython):
    rng = np.random.default_rng(0)
    cases = [
        ([float(p) for p in rng.dirichlet([1, 1])], ["real", "render"], threshold, sure)
        for threshold in (0.475217, 0.25, 0.9)
        for sure in (0.6, 0.95)
        for _ in range(50)
    ]
    cases += [([float(p) for p in rng.dirichlet([1, 1, 1])], ["a", "b", "c"], None, 0.6) for _ in range(50)]
    printed = micropython(f"""
import json
from rendernet.decision import decide
print(json.dumps([list(decide(*case)) for case in json.loads({json.dumps(cases)!r})]))
""")
    decided = json.loads(printed)
    assert len(decided) == len(cases)
    for (label, confidence, not_sure), case in zip(decided, cases, strict=True):
        expected = decide(*case)
        assert (label, not_sure) == (expected.label, expected.not_sure)
        assert confidence == pytest.approx(expected.confidence, abs=1e-12)
