#!/usr/bin/env bash
# client/js/ci.sh: installs what the JS side needs on a fresh Debian machine
# and runs every JS test: the shared vectors, strict JSON and JOSE
# cross-checks, the JS⇄Go cross-implementation tests (one server, and a
# browser on one node of a Redis cluster with Go on another) and the real-browser
# tests (chat; session lifetime, failed verification, mobile layout; direct
# messages, read-only rooms, dark mode, reconnecting, details: chat.test.mjs;
# history on join, after a reload and across a restart: chat-history.test.mjs;
# direct messages kept while away and after a reload: chat-dm-history.test.mjs). It
# fails if any of them cannot run; nothing is skipped.
#
#   client/js/ci.sh            install (apt-get, npm ci) and test
#   SIGIL_CI_NO_INSTALL=1 ...  test only (tools already installed)
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"

if [ "${SIGIL_CI_NO_INSTALL:-}" != 1 ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "${SIGIL_CI_NO_INSTALL:-}" != 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

for tool in node go /usr/bin/chromium redis-server; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ci.sh: $tool is missing" >&2; exit 1; }
done
[ -d node_modules/playwright-core ] && [ -d node_modules/ws ] && [ -d node_modules/jose ] || { echo "ci.sh: run npm ci first" >&2; exit 1; }

echo "== node --test (vectors, strict JSON, JOSE cross-check, handshake and close codes, grants, JS⇄Go, browser, browser lifetime, chat)"
# One file at a time: the cross and browser tests each start a server, and
# the browser is heavy on a small machine.
log="$(mktemp)"
set +e
node --test --test-concurrency=1 \
  test/vectors.test.mjs test/strictjson.test.mjs test/jose-cross.test.mjs test/handshake.test.mjs \
  test/grants.test.mjs test/cross.test.mjs test/history.test.mjs test/inbox.test.mjs test/inbox-late.test.mjs test/cluster.test.mjs test/browser.test.mjs test/browser-lifetime.test.mjs test/chat.test.mjs test/chat-history.test.mjs test/chat-dm-history.test.mjs >"$log" 2>&1
status=$?
set -e
grep -E '^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) |sigil vectors|^not ok' "$log" || true
if [ "$status" != 0 ]; then
  echo "ci.sh: JS tests FAILED (exit $status); details:" >&2
  grep -B2 -A30 '^not ok' "$log" >&2 || cat "$log" >&2
fi
rm -f "$log"
exit "$status"
