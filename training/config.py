"""Every training setting, defined once: its default, its command-line option and its help.

`rendernet train` gets its options from TrainConfig (add_arguments / from_args),
`train()` takes one, and metrics.json records it (as_dict), so a model folder
says exactly how it was made.
"""

import argparse
from dataclasses import asdict, dataclass, field, fields, replace

from rendernet.preprocess import INPUT_SIZE

ARCHITECTURES = {  # what each architecture sets: input side (when --input-size is not given), the dtype its kernels are
    "efficientnet-lite0": {"input_size": 224, "weights_dtype": "int8", "learning_rate": 1e-3},  # stored in, and Adam's
    "small": {"input_size": INPUT_SIZE, "weights_dtype": "float32", "learning_rate": 2e-3},  # learning rate
}
ARCHITECTURE_NAMES = tuple(ARCHITECTURES)
FEATURE_LAYERS = ("block8_add", "block11_add", "block15_add", "head")  # training/efficientnet.py, without importing Keras
STRATEGIES = ("default", "mirrored", "multi-worker")


def option(default, help: str, flag: str = "", **argparse_options):
    """A setting: its default, its help, and anything argparse needs beyond the type of the default."""
    return field(default=default, metadata={"help": help, "flag": flag, **argparse_options})


def widths(text: str) -> tuple:
    return tuple(int(part) for part in text.split(","))


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = option(
        "efficientnet-lite0",
        choices=ARCHITECTURE_NAMES,
        help="efficientnet-lite0 (default): frozen ImageNet backbone + trained head, 224 px, int8 "
        "weights; small: the from-scratch high-pass CNN, 200 px, ~50x faster in the browser",
    )
    features: str = option(
        "block11_add",
        choices=FEATURE_LAYERS,
        help="efficientnet-lite0: the backbone layer whose pooled output the head reads (default "
        "block11_add, the end of stage 5: best on unseen sources, see the README)",
    )
    hidden: int = option(0, help="efficientnet-lite0: units of a ReLU layer before the softmax (default 0: a linear head)")
    fine_tune: int = option(
        0,
        help="efficientnet-lite0: also train this many backbone blocks before --features, on their "
        "input computed once per view, after the head (default 0: the backbone stays frozen)",
    )
    fine_tune_epochs: int = option(6, help="with --fine-tune, the most epochs of it (default 6)")
    fine_tune_learning_rate: float = option(
        1e-4,
        help="with --fine-tune, Adam's learning rate for it (default 1e-4: "
        "smaller steps are mostly lost to the int8 rounding of the kernels)",
    )
    heads: int = option(
        1,
        help="efficientnet-lite0, linear head: train this many heads from seeds --seed, --seed+1, ... and "
        "store their mean (the mean of their logits: one head, the same cost; default 1)",
    )
    balance_sources: bool = option(
        False,
        help="efficientnet-lite0: every source of a class weighs the same in the loss "
        "(default: every image of a class weighs the same)",
    )
    dropout: float = option(0.2, help="dropout rate before the softmax (default 0.2)")
    input_size: int | None = option(None, type=int, help="input side in px (default: 224 for efficientnet-lite0, 200 for small)")
    views: int = option(4, help="efficientnet-lite0: views per training image, the original + augmented crops (default 4)")
    epochs: int = option(60, help="maximum epochs (default 60)")
    patience: int = option(12, help="EarlyStopping patience in epochs (default 12)")
    batch_size: int = option(32, help="images per step (default 32; across all replicas)")
    learning_rate: float | None = option(None, type=float, help="Adam's learning rate (default 1e-3 pretrained, 2e-3 small)")
    seed: int = option(1234, help="random seed (default 1234): same seed, same data, same weights")
    widths: tuple = option(
        (16, 32, 64), type=widths, help="small: filters of each conv block, comma-separated (default 16,32,64; up to 5 blocks)"
    )
    strategy: str = option(
        "default",
        choices=STRATEGIES,
        help="small: mirrored = tf.distribute.MirroredStrategy over the local devices; multi-worker = "
        "MultiWorkerMirroredStrategy over the machines in TF_CONFIG (see the README)",
    )
    quantize: tuple = option((), action="append", choices=("float16", "int8"), help="also write model.<mode>.tflite (repeatable)")
    random_crops: bool = option(
        False,
        help="augment with random resized crops of a 320 px square (off by default: it "
        "did not help on the default dataset; see the README)",
    )
    hold_out: tuple = option(
        (),
        action="append",
        metavar="SOURCE",
        help="keep this source (from the dataset manifest) out of training and validation and "
        "report accuracy on all of it (repeatable)",
    )
    loso: bool = option(
        False, flag="--leave-one-source-out", help="also retrain once per source without it and score that source (slow)"
    )
    priority_families: tuple = option(
        ("rooms", "exteriors"),
        action="append",
        metavar="FAMILY",
        flag="--priority-family",
        help="with --leave-one-source-out, the threshold serves these families of the "
        "dataset manifest first (repeatable; default rooms and exteriors)",
    )
    guard_accuracy: float = option(
        0.8,
        help="with --leave-one-source-out, the accuracy every source outside the priority "
        "families should keep when it is left out (default 0.8)",
    )
    verbose: int = option(1, choices=(0, 1, 2), help="0: quiet, 1: progress bars (default), 2: one line per epoch")

    def resolved(self) -> "TrainConfig":
        """This config with the architecture's input size and learning rate filled in where they were left to it."""
        defaults = ARCHITECTURES[self.architecture]
        return replace(
            self,
            input_size=self.input_size or defaults["input_size"],
            learning_rate=self.learning_rate or defaults["learning_rate"],
        )

    def as_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for setting in fields(cls):
            meta = dict(setting.metadata)
            flag = meta.pop("flag") or "--" + setting.name.replace("_", "-")
            if isinstance(setting.default, bool):
                parser.add_argument(flag, dest=setting.name, action="store_true", help=meta["help"])
                continue
            meta.setdefault(
                "type", type(setting.default) if setting.default is not None and meta.get("action") != "append" else None
            )
            if meta["type"] is None:
                meta.pop("type")
            parser.add_argument(
                flag, dest=setting.name, default=None if meta.get("action") == "append" else setting.default, **meta
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        values = {setting.name: getattr(args, setting.name) for setting in fields(cls)}
        return cls(
            **{name: tuple(value) if isinstance(value, list) else value for name, value in values.items() if value is not None}
        )
