"""``python -m seglab``: the same as the ``seglab`` command."""

import sys

from .cli import main

sys.exit(main())
