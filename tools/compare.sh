#!/usr/bin/env bash
# The main job: installs tfreg with the `compare` extra, then runs
# `tfreg compare` (arguments are passed through; none needed).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e ".[compare]"
exec python3 -m tfreg compare "$@"
