#!/usr/bin/env bash
# Runs the unit and integration tests once per Keras backend (Keras picks its
# backend at import, so each backend needs its own pytest run). Extra
# arguments go to pytest. Exits non-zero if any backend's run failed.
#
# Two pytest workers (pytest-xdist), a test file each at a time: most tests
# are single-threaded work (tracing, compiling, small models), so two keep two
# cores busy. One OpenMP thread per worker, since PyTorch's OpenMP threads
# stall when two processes' threads compete for the same cores.
# TEST_WORKERS=0 runs in one process.
set -u
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
workers=${TEST_WORKERS:-2}
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -n "$workers" \
    --dist loadfile --durations=15 "$@" || status=1
done
exit $status
