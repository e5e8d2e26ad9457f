"""Model file formats -> float IR: ``onnx`` (ONNX files); Keras files are read by
``lstm_embed.frontend`` and ``lstm_embed.reader``."""
