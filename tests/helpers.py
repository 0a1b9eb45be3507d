"""Helpers for comparing the NumPy forward pass with Keras and the LiteRT interpreter."""

import numpy as np


def export_and_load(model, folder, classes=None):
    from rendernet import load_model
    from rendernet_train.export import export_numpy

    classes = classes or [f"class{index}" for index in range(model.output_shape[-1])]
    export_numpy(model, folder, classes)
    return load_model(folder)


def tflite_run(path, batch: np.ndarray) -> np.ndarray:
    """Run a .tflite file on a batch, one image at a time, with ai-edge-litert's built-in kernels.

    Not through the default XNNPACK delegate: it reorders sums, so it strays from Keras itself by up to
    1.8e-5 in probability on a model trained here (built-in kernels: 2e-7), more than the 1e-5 parity bound."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for item in batch:
        interpreter.set_tensor(source["index"], item[None].astype(source["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"])[0].astype(np.float32))
    return np.stack(outputs)
