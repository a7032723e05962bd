"""The data tools and the benchmark pipelines."""
