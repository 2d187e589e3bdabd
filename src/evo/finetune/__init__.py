"""Fine-tuning as a service: uploaded files, job objects, and the runner that turns a job into a generation."""
