"""The training configuration: one dataclass gives the CLI options, train()'s settings and metrics.json's record."""

import json

from rendernet_train.cli import parser
from rendernet_train.config import TrainConfig


def parse(*arguments):
    return TrainConfig.from_args(parser().parse_args(["train", "data", "--out", "model", *arguments]))


def test_defaults_come_from_the_dataclass():
    assert parse() == TrainConfig()


def test_every_option_reaches_the_config():
    config = parse(
        "--architecture",
        "small",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--learning-rate",
        "0.01",
        "--widths",
        "8,16",
        "--quantize",
        "int8",
        "--quantize",
        "float16",
        "--hold-out",
        "povray",
        "--leave-one-source-out",
        "--random-crops",
        "--strategy",
        "multi-worker",
        "--input-size",
        "96",
        "--verbose",
        "0",
        "--dropout",
        "0.5",
        "--priority-family",
        "rooms",
        "--guard-accuracy",
        "0.7",
        "--heads",
        "5",
    )
    assert config == TrainConfig(
        architecture="small",
        epochs=3,
        batch_size=8,
        learning_rate=0.01,
        widths=(8, 16),
        quantize=("int8", "float16"),
        hold_out=("povray",),
        loso=True,
        random_crops=True,
        strategy="multi-worker",
        input_size=96,
        verbose=0,
        dropout=0.5,
        priority_families=("rooms",),
        guard_accuracy=0.7,
        heads=5,
    )
    assert json.loads(json.dumps(config.as_dict()))["widths"] == [8, 16]


def test_what_the_architecture_decides_is_filled_in_from_one_table():
    from rendernet_train.config import ARCHITECTURES

    assert TrainConfig().resolved().input_size == 224 and TrainConfig().resolved().learning_rate == 1e-3
    small = TrainConfig(architecture="small").resolved()
    assert (small.input_size, small.learning_rate) == (ARCHITECTURES["small"]["input_size"], 2e-3) == (200, 2e-3)
    assert TrainConfig(input_size=160, learning_rate=0.01).resolved() == TrainConfig(input_size=160, learning_rate=0.01)
