"""onnxedge.export: heads, ONNX export, parity verification and edge variants (torch + onnx)."""
