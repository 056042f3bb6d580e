"""`accel ARGV` for tests/test_eval_processes.py, ARGV given as one JSON list:
torch.distributed.run's own parser would read accel's ``--n`` as an abbreviation of its ``--nnodes``
/ ``--nproc-per-node`` and stop."""

import json
import sys

from accel.cli import main

if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
