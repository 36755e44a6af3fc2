#!/usr/bin/env bash
# The main job: installs tfreg with the `compare` extra, then runs
# `tfreg compare` (arguments are passed through; none needed: about 2-3
# minutes on 2 CPU cores; --quick for a first look, --thorough for more).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[compare]"
# The `tfreg` console script's launcher, run by module name so that no PATH
# entry for pip's scripts directory is needed.
exec python3 -m _tfreg_cli compare "$@"
