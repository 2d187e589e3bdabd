"""The lineage: a ledger row per generation and a registry of every model with its aliases."""
