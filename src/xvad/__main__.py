"""``python -m xvad`` is the ``xvad`` command."""
import sys

from .cli import main

sys.exit(main())
