"""Model loading, inference, VAD, the pipeline, the worker and the CLI."""
