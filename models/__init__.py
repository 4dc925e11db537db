"""onnxedge.models: the networks, the numpy reference, datasets and training (torch + numpy)."""
