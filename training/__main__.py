"""``python -m training --help``: the training tool (see ``training.train``)."""
import sys

from training.train import cli

sys.exit(cli())
