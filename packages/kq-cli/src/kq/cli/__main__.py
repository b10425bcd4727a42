"""``python -m kq.cli``: the same as the ``kq`` command (how consumers run ``kq`` commands by default)."""

from _kq_launcher import run

run()
