"""Storage of one run: the Zarr image store, the Parquet result store and the run's config.

Knows nothing of Prefect or Dask; every function takes paths and plain data.
"""
