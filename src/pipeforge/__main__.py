"""`python -m pipeforge` is the `pipeforge` command."""

import sys

from pipeforge.cli import main

sys.exit(main())
