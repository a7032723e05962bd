"""Command-line data tools; each has ``main(argv=None)``."""
