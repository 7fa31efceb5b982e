"""The benchmark harness behind `python benchmarks/run.py`: workloads, child runs, report.

- `workloads`: the four workloads, their contenders (hand-written reference vs pipeforge) and
  the generated data they train on.
- `children`: run one contender as a fresh child process and measure it (wall time, peak RSS,
  the `BENCH_RESULT` line it prints).
- `report`: medians, ratios to the reference, targets, and the markdown of RESULTS.md.
"""
