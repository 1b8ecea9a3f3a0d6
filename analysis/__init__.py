"""Analysis of finished runs: accuracy tables, sweep and white-box sections, figures, report.

This layer sits above :mod:`storage`: it reads a run's Parquet tables and Zarr images through
``storage`` and writes only what it derives from them (``report.md`` and ``figures/``), never
results. Like ``storage`` it knows nothing of Prefect or Dask; ``storage`` never imports it.

- :mod:`analysis.tables`: accuracy tables, from the results alone; :mod:`analysis.sweeps`,
  :mod:`analysis.whitebox` and :mod:`analysis.timing` the report's sections built on them,
  and :mod:`analysis.report` the markdown report that gathers them.
- :mod:`analysis.figures`: PNG figures (matplotlib's object API) from tables and images.
- :mod:`analysis.publish`: writes a run's ``report.md`` and draws its figures.
"""
