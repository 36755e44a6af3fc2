#!/usr/bin/env bash
# Installs what the tests need, then runs every suite once per Keras generation:
# with Bazel when it is available (installed here from Debian's bazel-bootstrap
# when apt-get exists), otherwise with pytest in both generations.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[test]"

if ! command -v bazel >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y -q bazel-bootstrap >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q bazel-bootstrap >/dev/null; }
fi

if command -v bazel >/dev/null 2>&1; then
  bazel test //... "$@"
else
  echo "tools/test.sh: Bazel not found. Install Debian's bazel-bootstrap" \
       "(apt-get install bazel-bootstrap) or Bazel 4+ from https://bazel.build;" \
       "running the absltest suites with pytest instead." >&2
  python3 -m pytest -q tests "$@"
  TF_USE_LEGACY_KERAS=1 python3 -m pytest -q tests "$@"
fi
