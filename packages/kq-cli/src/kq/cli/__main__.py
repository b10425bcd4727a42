"""``python -m kq.cli``: the same as the ``kq`` command (how consumers run ``kq`` commands by default)."""

from kq.cli._main import main

main()
