"""Side-by-side benchmarks of lelog, the standard library and the best-known peers.

``python -m benchmarks`` (``--quick`` for a smoke run); see ``benchmarks/README.md``.
"""
