"""The calls the page's main thread (main.py) makes to its worker (worker.py): the worker exports exactly these
(PyScript's __export__), and main.py calls no other (tests/test_build.py checks both). Pure Python."""

WORKER_CALLS = (
    "load",  # the model, from the bundle's model folder
    "warm_up",
    "classify",  # one file: result, thumbnail, heatmap, pooled features
    "view",  # one file, large, with its heatmap
    "to_csv",
    "correct",  # the adaptation: a correction, undo, back to the shipped model, a colleague's file
    "undo",
    "reset",
    "add_corrections",
    "corrections_text",
    "forget_rows",
    "remember",
    "restore",  # the kept corrections, at start and when another tab changed them
    "rescore",  # every row's probabilities again (a row scored with an older head arrived)
    "head",  # the adapted head, for the pool's other workers
    "set_head",
    "kept",
    "adapted_model",
    "ping",
    "hold",  # a Web Lock for the worker's life: the page notices at once when it ends
    "memory",
    "time_adaptation",  # ?debug hooks: benchmarks and tests
    "time_forward",
    "matmul",
    "profile",
    "modules",
    "crash",
)
