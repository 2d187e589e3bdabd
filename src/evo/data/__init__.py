"""Records, ingestion, the content-addressed store, training mixes and the demo domain."""
