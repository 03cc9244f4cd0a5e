"""Command-line entry points: ``aretriever`` subcommands and ``python -m aretriever.<cmd>``."""
