"""Helpers for running evo against real local Ray clusters (tests, demonstrations)."""
