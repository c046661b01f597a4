#!/bin/sh
# Translated-call CPU, old tree (session start, f236743) vs new (HEAD), ABAB.
# First: git worktree add /tmp/wt_old f236743
set -e
cd /work/main
for i in 1 2; do
  for tree in old new; do
    if [ $tree = old ]; then PP=/tmp/wt_old; else PP=/work/main; fi
    PYTHONPATH=$PP .venv/bin/python reliability/soak.py --mode translated --calls 14 --minutes 2.5 --min-call 200 \
      --base 23000 --monitor-port 3102 --bridge-cpu 0 --gen-cpu 0 --fake-cpu 1 --out /tmp/cal/ab/$tree-$i \
      > /tmp/cal/ab/$tree-$i.out 2>&1
    sleep 3
  done
done
echo done > /tmp/cal/ab/DONE
