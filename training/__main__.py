"""``python -m training --help``: the training tool (see ``training.cli``)."""
import sys

from training.cli import cli

sys.exit(cli())
