#!/bin/sh
# Deepgram chunk_ms 20 against 40 with 14 translated calls, ABAB (BENCHMARKS.md,
# "Translated-call CPU").  Run from the repository root; results in /tmp/chunk_ab/.
set -e
out=/tmp/chunk_ab
mkdir -p $out
for c in 20 40; do printf '[deepgram]\nchunk_ms = %s\n' $c > $out/chunk$c.toml; done
for i in 1 2; do
  for c in 20 40; do
    .venv/bin/python reliability/soak.py --mode translated --calls 14 --minutes 2.5 --min-call 200 \
      --base 23000 --monitor-port 3102 --bridge-cpu 0 --gen-cpu 0 --fake-cpu 1 \
      --bridge-arg=--config=$out/chunk$c.toml --out $out/c$c-$i > $out/c$c-$i.out 2>&1
    sleep 3
  done
done
