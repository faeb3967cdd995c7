"""Built-in plugins: models and data sets, registered through the public hooks."""
