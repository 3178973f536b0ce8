"""`python -m cli`: the shrinkflow command."""

import sys

from shrinkflow.cli.main import main

sys.exit(main())
