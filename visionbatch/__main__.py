"""`python -m visionbatch`: the same as the `visionbatch` command."""

import sys

from visionbatch.cli import main

sys.exit(main())
