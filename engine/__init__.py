"""SyncEngine: claiming, worker pool, leases, cancellation, retries, live progress."""
