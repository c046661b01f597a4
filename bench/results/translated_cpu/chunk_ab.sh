#!/bin/sh
cd /work/main
for i in 1 2; do
  for c in 20 40; do
    .venv/bin/python reliability/soak.py --mode translated --calls 14 --minutes 2.5 --min-call 200 \
      --base 23000 --monitor-port 3102 --bridge-cpu 0 --gen-cpu 0 --fake-cpu 1 \
      --bridge-arg=--config=/tmp/cal/chunk$c.toml --out /tmp/cal/chunk/c$c-$i > /tmp/cal/chunk/c$c-$i.out 2>&1
    sleep 3
  done
done
echo done > /tmp/cal/chunk/DONE
