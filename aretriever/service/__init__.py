"""Long-running use: the embedding API (Retriever), the daemon, its metrics and logs."""
