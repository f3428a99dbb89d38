"""impasto.export: torch -> ONNX -> TensorRT, and the model repository (Triton layout)."""
