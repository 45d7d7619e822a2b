"""``python -m tokengym ...``: the ``tokengym`` command (see :mod:`tokengym.cli`)."""

from tokengym.cli import main

raise SystemExit(main())
