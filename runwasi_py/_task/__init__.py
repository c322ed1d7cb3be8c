"""containerd's Task service: RPC handlers, the task state table, instances, workers, stats."""
