"""The argument parsers of the ``ssl-zoo`` subcommands whose runners import torch, timm or accelerate.

``ssl-zoo SUBCOMMAND --help`` builds only its parser, so these modules import nothing but the standard library
(and ``ssl_zoo.errors``) at their top: help appears in a fraction of a second instead of the seconds torch takes
to load. The runners stay with their code (``ssl_zoo.train``, ``ssl_zoo.evaluation.cli``, ...) and re-export
their parser builder. tests/test_cli_imports.py checks each subcommand's ``--help`` in a fresh interpreter.
"""
