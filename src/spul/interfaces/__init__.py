"""User interfaces: the ``spul`` command line (and, later, serving)."""
