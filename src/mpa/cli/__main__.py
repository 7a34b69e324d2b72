"""``python -m mpa.cli``: the ``mpa`` command."""

from mpa.cli import main

main()
