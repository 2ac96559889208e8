"""`python -m runtimes ...`."""

import sys

from runtimes.cli import main

sys.exit(main())
