"""Fine-tuning as a service on `evo serve`'s application: uploaded files, jobs, API keys."""
