"""The method's orchestration, shared by the CLI, the Python API and the one-image command."""
