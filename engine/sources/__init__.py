"""Data sources: streaming readers for .xlsx/.csv files and a paginating JSON-over-HTTP reader.

The building blocks the `stock_import`, `full_sync` and `incremental_sync` handlers read with;
they know nothing of tasks or the database.
"""
