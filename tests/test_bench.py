"""Every benchmark script starts: its imports resolve against the current code (its --help runs)."""

import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = sorted(path for path in (ROOT / "bench").glob("*.py") if "__main__" in path.read_text())


# The extras each script imports at start: without them its test is skipped.
NEEDS = {"cluster": "distributed", "test_crops": "keras", "forward": "keras", "feature_ceiling": "keras"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.stem for script in SCRIPTS])
def test_benchmark_script_starts(script):
    if script.stem in NEEDS:
        pytest.importorskip(NEEDS[script.stem])
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
