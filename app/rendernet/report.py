"""Results as CSV, safe to open in a spreadsheet: the page's download and `rendernet classify --csv`.

Pure Python. Every row is decided by decision.decide with the same `sure`
level the screen shows. A cell that a spreadsheet would read as a formula
(starting with =, +, -, @, tab or carriage return, OWASP's list) gets a leading
apostrophe, so a file named "=HYPERLINK(...).png" stays text.
"""

import csv
import io

from .decision import answer, decide
from .evidence import evidence_text

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def model_description(corrections=None) -> str:
    """Which model answered, as the page and the CSVs say it: the shipped one, or one adapted to corrections
    ({class: count}: the page's, or an adapted model's manifest "adapted.corrections")."""
    total = sum(corrections.values()) if corrections else 0
    if not total:
        return "shipped model"
    counts = ", ".join(f"{count} {name}" for name, count in corrections.items())
    return f"adapted to your images: {total} correction{'s' if total != 1 else ''} ({counts})"


def csv_header(classes) -> list:
    return [
        "file",
        "label",
        "confidence",
        "not_sure",
        *[f"p_{name}" for name in classes],
        "ms",
        "error",
        "model",
        "your_label",
        "answer",
        "threshold",
        "shipped_label",
        "evidence",
    ]


def csv_row(result: dict, classes, threshold, sure: float) -> list:
    """One result ({"file", "probabilities", "ms", "model", "your_label", "shipped"} or {"file", "error"}) as CSV
    cells: "label", "confidence" and "not_sure" are the model's decision; "answer" the one shown (the user's label
    when they corrected the image, decision.answer); "model" is model_description's; "shipped_label" the shipped
    model's decision when an adapted one answered ("shipped": its probabilities); "threshold" the model's;
    "evidence" what the file's metadata says made it (evidence.py)."""
    probabilities = result.get("probabilities")
    if probabilities:
        decision = decide(probabilities, classes, threshold, sure)
        shown = answer(probabilities, classes, threshold, sure, result.get("your_label"))
        shipped = result.get("shipped")
        cells = [
            decision.label,
            round(decision.confidence, 4),
            decision.not_sure,
            *[probabilities.get(name, "") for name in classes],
        ]
        last = [
            shown.label,
            "" if threshold is None else threshold,
            decide(shipped, classes, threshold, sure).label if shipped else "",
            evidence_text(result.get("evidence", {})),
        ]
    else:
        cells, last = ["", "", "", *["" for _ in classes]], ["", "", "", ""]
    return [
        safe_cell(cell)
        for cell in [
            result["file"],
            *cells,
            result.get("ms", ""),
            result.get("error", ""),
            result.get("model", ""),
            result.get("your_label", ""),
            *last,
        ]
    ]


def results_csv(results, classes, threshold, sure: float) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([safe_cell(cell) for cell in csv_header(classes)])
    for result in results:
        writer.writerow(csv_row(result, classes, threshold, sure))
    return out.getvalue()
