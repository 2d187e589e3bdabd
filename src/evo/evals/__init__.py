"""The fixed evals that score a child against its parent."""
