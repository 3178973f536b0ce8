"""`python -m cli`: the shrinkflow command."""

import sys

from cli.main import main

sys.exit(main())
