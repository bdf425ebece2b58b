#!/usr/bin/env bash
# Open OUT_DIR/report.html in headless Chromium, screenshot it, and fail on a broken image
# or any console message.
#
#   scripts/check_report_browser.sh out/quickstart      # → out/quickstart/report_screenshot.png
#
# How it checks (not part of pytest: CI does not need a browser):
#   1. --dump-dom after the page's load event. report.html checks every <img> itself
#      (complete and naturalWidth > 0) and sets <html data-image-check="OK"> or "BROKEN n";
#      anything but OK fails.
#   2. --enable-logging=stderr --v=0 prints every console message as "...:CONSOLE..." (with
#      uncaught exceptions as "Uncaught ..."). The report never logs, so any such line fails.
#   3. --screenshot of the top of the page (SCREENSHOT_HEIGHT px, default 5000) for a look.
# Installs Debian's chromium with apt-get if no Chromium is found (needs root).
set -euo pipefail

out="${1:?usage: scripts/check_report_browser.sh OUT_DIR}"
html="$(cd "$out" && pwd)/report.html"
if [[ ! -f "$html" ]]; then
    echo "check_report_browser: $html not found; run: latentcast report $out" >&2
    exit 2
fi

chrome=""
for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then chrome="$(command -v "$c")"; break; fi
done
if [[ -z "$chrome" ]]; then
    echo "check_report_browser: installing Debian's chromium (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    chrome="$(command -v chromium)"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --enable-logging=stderr --v=0 --virtual-time-budget=15000
       --hide-scrollbars)

fail() { echo "check_report_browser: chromium failed ($1)" >&2; tail -5 "$2" >&2; exit 1; }
timeout 120 "$chrome" "${flags[@]}" --user-data-dir="$work/profile1" --dump-dom "file://$html" \
    >"$work/dom.html" 2>"$work/dom.log" || fail --dump-dom "$work/dom.log"
shot="$(cd "$out" && pwd)/report_screenshot.png"
timeout 120 "$chrome" "${flags[@]}" --user-data-dir="$work/profile2" --window-size="1280,${SCREENSHOT_HEIGHT:-5000}" \
    --screenshot="$shot" "file://$html" >"$work/shot.out" 2>"$work/shot.log" || fail --screenshot "$work/shot.log"

status=0
check="$(grep -o 'data-image-check="[^"]*"' "$work/dom.html" | head -1 | cut -d'"' -f2 || true)"
images="$(grep -o 'data-images="[^"]*"' "$work/dom.html" | head -1 | cut -d'"' -f2 || true)"
if [[ "$check" != "OK" ]]; then
    echo "check_report_browser: images: ${check:-page check did not run} (of ${images:-?})" >&2
    status=1
fi
if grep -h ':CONSOLE' "$work/dom.log" "$work/shot.log" >"$work/console.txt"; then
    echo "check_report_browser: console messages:" >&2
    sed 's/^/  /' "$work/console.txt" >&2
    status=1
fi
if [[ ! -s "$shot" ]]; then
    echo "check_report_browser: no screenshot written" >&2
    status=1
fi
if [[ $status -eq 0 ]]; then
    echo "check_report_browser: OK: ${images} image(s) decoded, no console message; screenshot $shot"
fi
exit $status
