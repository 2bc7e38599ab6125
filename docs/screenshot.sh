#!/usr/bin/env bash
# Render `nvfp4 inspect --html` in headless Chromium (Debian's package) and screenshot it.
#   apt-get install -y chromium      (once)
#   bash docs/screenshot.sh [MODEL]  -> docs/inspect_tiny.html, docs/inspect_tiny.png
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-tiny}
HTML=docs/inspect_${MODEL}.html
PNG=docs/inspect_${MODEL}.png
.venv/bin/nvfp4 inspect "$MODEL" --html "$HTML" --force > /dev/null
PROFILE=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$PROFILE" --hide-scrollbars \
  --window-size=1500,1400 --screenshot="$PWD/$PNG" "file://$PWD/$HTML" 2>/dev/null
rm -rf "$PROFILE"
echo "wrote $HTML and $PNG"
