"""Inference: which model answers a request (the gateway) and the loaded models that answer it (the pool)."""
