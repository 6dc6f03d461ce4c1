"""Benchmarks for the ``requence_task`` client against the local server (issue 6).

Run ``python -m benchmarks [--quick] [--json OUT]``. Each scenario runs in a
fresh process (``python -m benchmarks.scenario NAME``), which starts the local
server in a process of its own (``python -m benchmarks.server``), so that the
client's CPU time is measured alone.
"""
