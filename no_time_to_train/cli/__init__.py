"""Entry points: the LightningCLI (``run_lightening.py``), its LightningModule, the one-image command."""


def main(argv: list[str] | None = None):  # noqa: ANN201 - see lightning_cli.main
    """``run_lightening.py``'s entry point (imported lazily: Lightning takes seconds to import)."""
    from no_time_to_train.cli.lightning_cli import main as run

    return run(argv)
