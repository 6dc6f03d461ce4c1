"""Benchmarks for the ``requence_task`` client against the local server (issue 6).

Run ``python -m benchmarks [--quick] [--json OUT] [--markdown FILE]``. Each
scenario runs in a fresh process (``python -m benchmarks.scenario NAME``, or
``python -m benchmarks.official NAME`` for the official ``requence`` client on
its own Python 3.12+), which starts the local server in a process of its own
(``python -m benchmarks.server``), so that the client's CPU time is measured
alone. ``docs/benchmarks.md`` explains the scenarios and holds the last full
table.
"""
