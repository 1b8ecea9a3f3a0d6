"""Prefect tasks: thin, typed wrappers that load from storage, call ride/ and write back."""
