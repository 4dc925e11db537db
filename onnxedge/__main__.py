"""``python -m onnxedge``: the ``onnxedge`` command line (the same as the console script)."""

from onnxedge.runtime.cli import main

main()
