"""``python -m mpa``: the ``mpa`` command."""

from mpa.cli import main

main()
