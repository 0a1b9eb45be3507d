"""Results as CSV, safe to open in a spreadsheet: the page's download and `rendernet classify --csv`.

Pure Python. Every row is decided by decision.decide with the same `sure`
level the screen shows. A cell that a spreadsheet would read as a formula
(starting with =, +, -, @, tab or carriage return, OWASP's list) gets a leading
apostrophe, so a file named "=HYPERLINK(...).png" stays text.
"""

import csv
import io

from .decision import decide

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_header(classes) -> list:
    return ["file", "label", "confidence", "not_sure", *[f"p_{name}" for name in classes], "ms", "error"]


def csv_row(result: dict, classes, threshold, sure: float) -> list:
    """One result ({"file", "probabilities", "ms"} or {"file", "error"}) as CSV cells."""
    probabilities = result.get("probabilities")
    if probabilities:
        decision = decide(probabilities, classes, threshold, sure)
        cells = [decision.label, round(decision.confidence, 4), decision.not_sure,
                 *[probabilities.get(name, "") for name in classes]]
    else:
        cells = ["", "", "", *["" for _ in classes]]
    return [safe_cell(cell) for cell in [result["file"], *cells, result.get("ms", ""), result.get("error", "")]]


def results_csv(results, classes, threshold, sure: float) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([safe_cell(cell) for cell in csv_header(classes)])
    for result in results:
        writer.writerow(csv_row(result, classes, threshold, sure))
    return out.getvalue()
