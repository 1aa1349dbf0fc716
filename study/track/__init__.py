"""MLflow: the parent and trial runs, tags and artifact names, dataset inputs, the model registry."""
