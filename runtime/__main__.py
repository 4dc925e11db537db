"""``python -m onnxedge.runtime``: the ``onnxedge`` command line."""

from onnxedge.runtime.cli import main

main()
