"""One module per extra subcommand; each defines ``register(subparsers)`` (see ``spul.interfaces.cli``)."""
