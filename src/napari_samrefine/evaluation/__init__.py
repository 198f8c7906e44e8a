"""Measuring refinements: metrics, synthesised coarse masks, classical baselines, the benchmark.

Nothing here runs when a user refines; the benchmarks and tests use it.

- :mod:`.metrics`: IoU, boundary IoU, per-object and per-class scores.
- :mod:`.defects`: DAVIS-585-style coarse masks synthesised from the truth (SPEC section 7).
- :mod:`.baselines`: weight-free refiners a user would try instead of SAM.
- :mod:`.benchmark`: the quality benchmark of docs/benchmarks.md.
"""
