"""runalert's benchmarks: overhead and throughput, measured side by side in one run, reported as ratios.

Run them all with ``python -m benchmarks`` (``make bench``); ``--quick`` for a short pass, ``--only NAME`` for
one suite. Each suite is a module here with ``run(quick: bool) -> list[Row]``.
"""
