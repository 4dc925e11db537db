"""Benchmarks: onnxedge beside PyTorch eager, raw onnxruntime and the machine's ceiling.

``make bench`` runs :mod:`benchmarks.run`. The harness is not part of the installed
package; it imports ``onnxedge`` like any user would.
"""
