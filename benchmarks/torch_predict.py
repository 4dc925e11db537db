"""The PyTorch-based equivalent of the embedded script, for the cold-start comparison.

``python benchmarks/torch_predict.py RUN_DIR ROWS.csv`` imports torch, loads the run
folder, wraps the net in the same head the ONNX file has, scores the CSV's rows
(a header line, then one row of raw features per line) and prints one line per row:
label, class name, top probability. What a device without onnxedge's ONNX path would
have to do.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Score ``argv[1]`` (CSV) with the run folder ``argv[0]``; print one line per row."""
    if len(argv) != 2:
        print("usage: torch_predict.py RUN_DIR ROWS.csv", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from onnxedge.export.heads import build_head_module
    from onnxedge.models.checkpoint import load_run

    run = load_run(argv[0])
    module = build_head_module(run)
    rows = np.loadtxt(argv[1], delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    with torch.inference_mode():
        _, probabilities, labels = module(torch.from_numpy(rows))
    if probabilities.shape[1] == 1:  # sigmoid: P(positive); the label's own probability
        positive = probabilities[:, 0]
        top = torch.where(labels == 1, positive, 1 - positive)
    else:
        top = probabilities.max(dim=1).values
    for label, p in zip(labels.tolist(), top.tolist(), strict=True):
        print(f"{label}\t{run.class_names[label]}\t{p:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
