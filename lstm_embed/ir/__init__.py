"""The float IR: the model's layers and shapes, and its float interpreter (Keras semantics)."""
