"""`evo serve`'s HTTP application: routes by resource, mounted on one Ray Serve deployment."""
