"""Serving champion and candidate side by side: the Ray-free A/B logic (gateway, router, feedback,
statistics, the OpenAI request shapes), the Ray Serve application around it (`deployments.py`),
and the A/B round that drives it (`ab_round.py`)."""
