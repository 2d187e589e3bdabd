"""Loading Hugging Face causal LMs, the offline tiny base, and content-addressed model artifacts."""
