"""The ``sealong`` console script: ``main`` parses, one module per sub-command.

Each sub-command module exposes ``register(subparsers)`` and keeps heavy
imports inside its handler, so ``sealong --help`` is instant. The CLI may import
anything else in the package; nothing imports the CLI.
"""
