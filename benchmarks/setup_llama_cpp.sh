#!/usr/bin/env bash
# Builds llama-cpp-python from its PyPI source distribution (its vendored llama.cpp includes the
# gemma-embedding Dense heads, ggml-org/llama.cpp#16367) into a virtual environment of its own,
# for benchmarks/gguf_parity.py. CPU only; one compile job at a time unless JOBS says more.
#
#   bash benchmarks/setup_llama_cpp.sh [VENV]      # default VENV: ~/.cache/keras_egemma/llama-cpp
set -euo pipefail
VENV="${1:-$HOME/.cache/keras_egemma/llama-cpp}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-1}" \
    "$VENV/bin/pip" install --no-binary llama-cpp-python "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'in $VENV')"
