"""`python -m pellucid.cli`: the same as the `pellucid` command."""

import sys

from pellucid.cli import main

sys.exit(main())
