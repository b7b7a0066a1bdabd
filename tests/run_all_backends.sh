#!/usr/bin/env bash
# Runs the unit and integration tests once per Keras backend (Keras picks its
# backend at import, so each backend needs its own pytest process). Extra
# arguments go to pytest. Exits non-zero if any backend's run failed.
set -u
cd "$(dirname "$0")/.."
status=0
for backend in ${BACKENDS:-jax tensorflow torch}; do
  echo "=== KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider --durations=15 "$@" || status=1
done
exit $status
