#!/usr/bin/env bash
# Builds llama-cpp-python from its PyPI source distribution (its vendored llama.cpp includes the
# gemma-embedding Dense heads, ggml-org/llama.cpp#16367) into a virtual environment of its own,
# for benchmarks/gguf_parity.py. CPU only; one compile job at a time unless JOBS says more.
#
#   bash benchmarks/setup_llama_cpp.sh [VENV]      # default VENV: ~/.cache/keras_egemma/llama-cpp
#
# Build flags (LLAMA_CMAKE_ARGS replaces the instruction-set part below): a fixed x86-64 AVX2 set,
# not GGML_NATIVE=ON. On a CPU with AMX (Sapphire Rapids and later Xeons) -march=native compiles in
# ggml's AMX extra buffer type, which repacks every Q8_0 matrix for its own kernels; with it,
# llama-cpp-python 0.3.36 died with SIGSEGV in libggml-cpu on our q8_0 files while f32/f16 ran
# (upstream: ggml-org/llama.cpp#19184, Q8_0 models failing CPU-only under AMX; #20824, SIGSEGV in
# ggml_backend_amx_mul_mat). Without AMX, Q8_0 runs on the plain AVX2 dot products (ggml has no
# x86 repack for Q8_0). GGML_NATIVE=OFF alone is not enough: ggml then turns the whole set off when
# the environment has SOURCE_DATE_EPOCH, so it is named. LLAVA_BUILD=OFF skips the multimodal
# library, which embedding does not use. About 45 minutes with JOBS=2 on 2 shared cores.
set -euo pipefail
VENV="${1:-$HOME/.cache/keras_egemma/llama-cpp}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ISA="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
CMAKE_ARGS="$ISA -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${JOBS:-1}" \
    "$VENV/bin/pip" install --no-binary llama-cpp-python "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'in $VENV')"
