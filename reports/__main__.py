import sys

from bench.cli import closed_pipe_safe
from reports.cli import main

sys.exit(closed_pipe_safe(main))
