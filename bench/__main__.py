import os
import sys

from bench.cli import closed_pipe_safe, main

status = closed_pipe_safe(main)
if status == 130:
    # interrupted: leave now, without the interpreter's shutdown (atexit callbacks, thread joins), where a
    # second Ctrl-C would print a traceback or end the process by the signal instead of 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
sys.exit(status)
