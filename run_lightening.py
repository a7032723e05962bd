"""Entry point: ``python run_lightening.py test --config CFG --model.test_mode MODE ...``."""

from no_time_to_train.cli.lightning_cli import main

if __name__ == "__main__":
    main()
