"""`python -m visionbatch`: the same as the `visionbatch` command."""

from visionbatch.cli import entry

entry()
