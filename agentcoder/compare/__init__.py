"""Compare runs: find run dirs, aggregate seeds into one table with intervals, plot, diff, report.

    python -m agentcoder.compare                      # outputs/ and multirun/
    python -m agentcoder.compare multirun/2026-11-26 --where method=lora,baseline quant=4bit --report
    python -m agentcoder.compare --diff RUN_A RUN_B

The pipeline reads top to bottom: `runs` (find and read run dirs) -> `tables` (group seeds, intervals
from `stats`) -> `plots` -> `report`; `diff` compares two runs example by example.  Nothing here
imports torch, and this package file imports nothing, so `--help` is instant.
"""
