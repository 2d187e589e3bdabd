"""The A/B logic that serve/ deploys: routing, feedback, statistics (no Ray Serve imports here)."""
