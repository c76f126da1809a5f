"""Run ``aero-relay`` under cProfile (``udp_ws_bench.py --profile cprofile``); benchmark use only.

The relay itself has no profiling code path: this wrapper enables cProfile around the normal CLI
entry point and dumps the stats to ``$AERO_BENCH_CPROFILE_OUT`` when the relay exits (SIGTERM
triggers its graceful shutdown, so the entry point returns normally).
"""

from __future__ import annotations

import cProfile
import os
import sys

from aero_relay.cli import main

if __name__ == "__main__":
    sys.argv[0] = "aero-relay"
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        code = main()
    finally:
        profiler.disable()
        profiler.dump_stats(os.environ["AERO_BENCH_CPROFILE_OUT"])
    sys.exit(code)
