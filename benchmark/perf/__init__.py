"""``python -m benchmark perf``: speed against the model's own limit and against the peers (docs/performance.md).

:mod:`.timing` counts and times passes and measures the limit; :mod:`.peers` runs the peer libraries' way of doing
the same work; :mod:`.reference_polycam` is the reference-style Poly-CAM loop; :mod:`.run` measures everything and
returns the JSON (its schema is in that module's docstring); :mod:`.report` prints it as a table.
"""
