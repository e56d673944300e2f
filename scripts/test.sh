#!/usr/bin/env bash
# The whole test suite: unit tests, then (as root) the real-kernel tests in lab namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

suites=(dist/test/unit)
if [ "$(id -u)" -eq 0 ]; then
  suites+=(dist/test/integration)
else
  echo "test: not root, skipping the real-kernel tests in dist/test/integration" >&2
fi
# Explicit *.test.js files: node 20's directory search would also run the shared test helpers.
mapfile -t files < <(find "${suites[@]}" -name '*.test.js' | sort)
# One test file at a time: the kernel tests each build a lab and must not fight over the CPUs.
node --test --test-concurrency=1 "${files[@]}"
