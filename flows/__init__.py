"""Prefect flows and the ``ride`` command line: they compose tasks/ and pick the task runner."""
