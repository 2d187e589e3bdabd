"""Training under Ray Train: the per-worker loop, its examples, and the trainer that runs it."""
