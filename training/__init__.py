"""rendernet training: dataset building, the Keras model, training and export."""
