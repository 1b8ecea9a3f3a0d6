"""The evaluation core: plain functions over (run layout, config, chunk), no Prefect or Dask.

Sits above ``ride/`` (the science), ``storage/`` (Zarr, Parquet) and ``analysis/`` (tables,
figures); ``tasks/`` wraps its functions as Prefect tasks (retries, caching, resources) and
``flows/`` composes them.
"""
