"""``python -m impasto.runtime.cli``: the same as the ``impasto`` console script."""

import sys

from impasto.runtime.cli import main

sys.exit(main())
