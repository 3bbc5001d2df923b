#!/usr/bin/env bash
# Installs everything on a fresh machine. `--dev` adds the test tools and a browser for the UI test.
#
# torch goes in first and sam2 (a source distribution whose build imports torch) is then built against it
# without build isolation, which would otherwise download a second torch into a temporary environment.
set -euo pipefail
cd "$(dirname "$0")/.."

export SAM2_BUILD_CUDA=0  # sam2 runs without its optional CUDA extension (hole filling, which we keep off)
python -m pip install -r requirements-build.txt
python -m pip install --no-build-isolation -r requirements.txt
# The package itself, editable: `import mpgsam2` from anywhere and the `mpgsam2` console script.
python -m pip install --no-deps --no-build-isolation -e .

if [[ "${1:-}" == "--dev" ]]; then
  python -m pip install -r requirements-dev.txt
  # The browser test drives Debian's chromium; Playwright's own browser download needs the open internet.
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
      echo "setup: chromium could not be installed; the browser test will be skipped" >&2
  fi
fi
