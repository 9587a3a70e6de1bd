#!/usr/bin/env bash
# Runs smithers with the REAL Claude Code, Codex and Gemini CLIs against the fake model server.
# Not part of CI: it downloads ~735 MB from npm. Nothing leaves 127.0.0.1 once installed.
#
#   scripts/real-clis.sh [claude|codex|gemini ...]     (default: all three)
#
# What it does, per ../shared/agent-clis/CLIS.md:
#   1. installs @anthropic-ai/claude-code, @openai/codex and @google/gemini-cli into $PREFIX
#      (default /tmp/smithers-real-clis; skipped when already there);
#   2. starts fake_model_server.py on 127.0.0.1 (Anthropic, OpenAI Responses and Gemini APIs);
#   3. for each CLI: a scratch HOME / CODEX_HOME / TMPDIR with the quiet settings, a scratch git
#      repository as the working directory, then
#        a. `smithers-agents/examples/cli_smoke.rs`: smithers' agent for that CLI runs it once and
#           prints the text, JSON, usage and session id it parsed, and
#        b. the bug-fix example (`examples/bugfix.rs`) with SMITHERS_AGENT=<cli>, if it exists.
#
# The example's contract: it picks its agent from SMITHERS_AGENT (claude | codex | gemini), finds
# the binary on PATH, works on the current directory, and takes `run --input JSON`.
#
# Environment:
#   PREFIX=/tmp/smithers-real-clis   where the CLIs are installed
#   FAKE_SERVER=path                 fake_model_server.py (default ../shared/agent-clis/ beside the repo)
#   FAKE_MODE=ok|error500|...        failure injection of the fake server (see its --help)
#   KEEP=1                           keep the scratch directory
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/tmp/smithers-real-clis}
FAKE_SERVER=${FAKE_SERVER:-$ROOT/../shared/agent-clis/fake_model_server.py}
CLIS=("$@")
[ ${#CLIS[@]} -eq 0 ] && CLIS=(claude codex gemini)

die() { echo "real-clis: $*" >&2; exit 1; }
command -v npm >/dev/null || die "npm is required (Node >= 20)"
command -v python3 >/dev/null || die "python3 is required for the fake model server"
[ -f "$FAKE_SERVER" ] || die "fake model server not found at $FAKE_SERVER; set FAKE_SERVER"

# 1. Install.
if [ ! -x "$PREFIX/node_modules/.bin/claude" ] || [ ! -x "$PREFIX/node_modules/.bin/codex" ] \
  || [ ! -x "$PREFIX/node_modules/.bin/gemini" ]; then
  echo "== installing the CLIs into $PREFIX"
  npm install --no-fund --no-audit --prefix "$PREFIX" \
    @anthropic-ai/claude-code @openai/codex @google/gemini-cli
fi
export PATH="$PREFIX/node_modules/.bin:$PATH"

SCRATCH=$(mktemp -d /tmp/smithers-real-clis-run.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$SCRATCH"; else echo "scratch kept: $SCRATCH"; fi
}
trap cleanup EXIT

# 2. The fake model server.
python3 "$FAKE_SERVER" --port 0 --port-file "$SCRATCH/port" --log "$SCRATCH/requests.jsonl" \
  --ttl 900 --mode "${FAKE_MODE:-ok}" >"$SCRATCH/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do [ -s "$SCRATCH/port" ] && break; sleep 0.1; done
[ -s "$SCRATCH/port" ] || die "the fake server did not start; see $SCRATCH/server.log"
PORT=$(cat "$SCRATCH/port")
BASE="http://127.0.0.1:$PORT"
echo "== fake model server on $BASE (requests logged to $SCRATCH/requests.jsonl)"

# Build the examples once, with the real HOME (cargo needs it).
echo "== building smithers-agents/examples/cli_smoke.rs"
(cd "$ROOT" && cargo build --quiet -p smithers-agents --example cli_smoke)
SMOKE="$ROOT/target/debug/examples/cli_smoke"
EXAMPLE=
if [ -f "$ROOT/examples/bugfix.rs" ]; then
  echo "== building examples/bugfix.rs"
  (cd "$ROOT" && cargo build --quiet --example bugfix)
  EXAMPLE="$ROOT/target/debug/examples/bugfix"
else
  echo "== examples/bugfix.rs is not there yet: running the CLI smoke tests only"
fi

INPUT='{"description":"add() in src/lib.rs subtracts instead of adding"}'
FAILED=()

setup_case() { # $1 = cli; prints nothing, sets up $CASE with home, tmp and a git repo
  CASE="$SCRATCH/$1"
  mkdir -p "$CASE/home" "$CASE/tmp" "$CASE/repo/src"
  printf 'pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n' >"$CASE/repo/src/lib.rs"
  git -C "$CASE/repo" init -q && git -C "$CASE/repo" add -A \
    && git -C "$CASE/repo" -c user.name=t -c user.email=t@t commit -qm init
}

env_claude() {
  env -i PATH="$PATH" HOME="$CASE/home" TMPDIR="$CASE/tmp" \
    ANTHROPIC_BASE_URL="$BASE" ANTHROPIC_API_KEY=sk-ant-fake \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \
    DISABLE_AUTOUPDATER=1 CLAUDE_CODE_MAX_RETRIES=2 SMITHERS_AGENT=claude "$@"
}

env_codex() {
  mkdir -p "$CASE/codex-home"
  cat >"$CASE/codex-home/config.toml" <<EOF
model = "gpt-5.5"
model_provider = "fake"
check_for_update_on_startup = false
[analytics]
enabled = false
[feedback]
enabled = false
[features]
plugins = false
apps = false
[model_providers.fake]
name = "Fake"
base_url = "$BASE/v1"
env_key = "FAKE_OPENAI_API_KEY"
wire_api = "responses"
request_max_retries = 1
stream_max_retries = 0
stream_idle_timeout_ms = 10000
EOF
  env -i PATH="$PATH" HOME="$CASE/home" TMPDIR="$CASE/tmp" CODEX_HOME="$CASE/codex-home" \
    FAKE_OPENAI_API_KEY=fake SMITHERS_AGENT=codex "$@"
}

env_gemini() {
  mkdir -p "$CASE/home/.gemini"
  cat >"$CASE/home/.gemini/settings.json" <<'EOF'
{ "security": {"auth": {"selectedType": "gemini-api-key"}},
  "privacy": {"usageStatisticsEnabled": false},
  "telemetry": {"enabled": false},
  "model": {"name": "gemini-2.5-pro"},
  "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false, "maxAttempts": 2} }
EOF
  env -i PATH="$PATH" HOME="$CASE/home" TMPDIR="$CASE/tmp" \
    GOOGLE_GEMINI_BASE_URL="$BASE" GEMINI_API_KEY=fake SMITHERS_AGENT=gemini "$@"
}

export -f env_claude env_codex env_gemini
export PATH BASE
for cli in "${CLIS[@]}"; do
  case $cli in claude | codex | gemini) ;; *) die "unknown CLI $cli (claude, codex or gemini)" ;; esac
  setup_case "$cli"
  export CASE
  echo "== $cli: smoke run"
  model=; [ "$cli" = gemini ] && model=gemini-2.5-pro  # the default `auto` makes a routing call first
  if (cd "$CASE/repo" && timeout 180 bash -c "env_$cli \"\$0\" $cli $model" "$SMOKE" </dev/null >"$CASE/smoke.jsonl" 2>"$CASE/smoke.err"); then
    cut -c1-300 "$CASE/smoke.jsonl"
  else
    echo "   FAILED (rc=$?); stderr tail:"; tail -n 5 "$CASE/smoke.err"; FAILED+=("$cli smoke")
  fi
  if [ -n "$EXAMPLE" ]; then
    echo "== $cli: examples/bugfix.rs"
    if (cd "$CASE/repo" && timeout 300 bash -c "env_$cli \"\$0\" run --input \"\$1\"" "$EXAMPLE" "$INPUT" </dev/null); then
      echo "   ok"
    else
      echo "   FAILED (rc=$?)"; FAILED+=("$cli example")
    fi
  fi
done

echo "== model requests seen by the fake server: $(cat "$SCRATCH/requests.jsonl" 2>/dev/null | wc -l)"
if [ ${#FAILED[@]} -gt 0 ]; then die "failed: ${FAILED[*]}"; fi
echo "== all good"
