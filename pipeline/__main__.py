"""`python -m pipeline` is the `rn50` CLI."""

import sys

from pipeline.cli import main

sys.exit(main())
