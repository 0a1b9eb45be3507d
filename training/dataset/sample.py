"""Pick the small committed sample (data/sample/) from a built dataset.

Every file of the `whole` sources (the permitted interior photographs and their
crops), then a round-robin over the other sources within each class, so every
source is represented, keeping each file's split, source, family and license;
writes manifest.json and an ATTRIBUTION.md listing every file's package,
original path and license.
"""

import json
import shutil
from pathlib import Path


def make_sample(dataset: Path, out: Path, per_class: int, whole=()) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    chosen = [entry for entry in manifest["files"] if entry["source"] in whole]
    for name in sorted({entry["class"] for entry in manifest["files"]}):
        by_source = {}
        for entry in sorted(manifest["files"], key=lambda entry: entry["sha256"]):
            if entry["class"] == name and entry["source"] not in whole:
                by_source.setdefault(entry["source"], []).append(entry)
        queues = list(by_source.values())
        picked = []
        while len(picked) < per_class and any(queues):
            for queue in queues:
                if queue and len(picked) < per_class:
                    picked.append(queue.pop(0))
        chosen += picked
    if out.exists():
        shutil.rmtree(out)
    for entry in chosen:
        (out / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset / entry["path"], out / entry["path"])
    sample_manifest = {key: value for key, value in manifest.items() if key not in ("files", "skipped", "stats")}
    sample_manifest["files"] = chosen
    (out / "manifest.json").write_text(json.dumps(sample_manifest, indent=1) + "\n")
    lines = [
        "# Attribution and licenses of the sample images",
        "",
        "Each image was normalised by `rendernet dataset build` (RGB, short side 320 px, WebP quality 90, no metadata)",
        "from a file in the named open package; POV-Ray and Blender images are renders made by the builder",
        "(of the package's example scenes, or of seeded rooms, product shots and streets furnished from its 3D models).",
        "Full license texts: the package's `/usr/share/doc/<package>/copyright` (Debian) or its wheel's license.",
        "",
        "| file | package | original | license |",
        "|---|---|---|---|",
    ]
    lines += [f"| {entry['path']} | {entry['package']} | {entry['original']} | {entry['license']} |" for entry in chosen]
    sources_by_credits = {}
    for source, credits in manifest.get("credits", {}).items():
        if any(entry["source"] == source for entry in chosen):
            sources_by_credits.setdefault(tuple(credits), []).append(source)
    for credits, sources in sources_by_credits.items():
        lines += ["", f"## 3D models that the {' and '.join(sources)} renders draw from", ""] + [f"- {line}" for line in credits]
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    print(f"sample: {len(chosen)} files in {out}")
