"""``python -m pfxhttp``: the same as the ``pfxhttp`` command."""

import sys

from pfxhttp.cli import main

sys.exit(main())
