"""Choosing what to train on next from the model's own errors: weak areas by per-example
perplexity (`weak`), targeted variations of their examples (`targeted`), and the experiment that
compares targeted with random data of the same size (`experiment`)."""
