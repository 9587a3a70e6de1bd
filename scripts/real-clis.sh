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
#        b. the bug-fix example (`examples/bugfix.rs`) with SMITHERS_AGENT=<cli>, if it exists,
#        c. large reply: cli_smoke again with a ~5 MB varied reply; checks that every byte arrived
#           (the CLIs exit without flushing a slow pipe: smithers captures stdout in a file),
#        d. 429: the bug-fix example while the server answers HTTP 429 (retry-after: 1); once the
#           first attempt has failed (the CLI's own retries spent) the server recovers, and the
#           run must finish with attempt 1 failed on the rate limit and attempt 2 finished after
#           the engine's backoff.
#
# The example's contract: it picks its agent from SMITHERS_AGENT (claude | codex | gemini), finds
# the binary on PATH, works on the current directory, and takes `run --input JSON`.
#
# Network: as root, once the CLIs are installed and the examples built, the script re-runs itself
# inside `unshare -n -m` (a network namespace with loopback only and a resolv.conf pointing at
# 127.0.0.1, where nothing answers), so no model request or telemetry can leave the machine.
# Without root it runs on the host network with only the quiet settings of CLIS.md to rely on.
#
# Environment:
#   PREFIX=/tmp/smithers-real-clis   where the CLIs are installed
#   CLAUDE_VERSION=2.1.197 CODEX_VERSION=0.169.0 GEMINI_VERSION=0.61.0
#                                    the npm versions (those of ../shared/agent-clis/CLIS.md);
#                                    a different version is installed over the one in PREFIX
#   FAKE_SERVER=path                 fake_model_server.py (default ../shared/agent-clis/ beside the repo)
#   FAKE_MODE=ok|error500|...        failure injection of the fake server (see its --help)
#   FAKE_REPLY=JSON                  the model's reply (default: one object that satisfies the
#                                    smoke schema and all three outputs of examples/bugfix.rs)
#   HOST_NET=1                       do not enter a network namespace even as root
#   KEEP=1                           keep the scratch directory
#   CASES="smoke example large 429"  which cases to run (default: all)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/tmp/smithers-real-clis}
FAKE_SERVER=${FAKE_SERVER:-$ROOT/../shared/agent-clis/fake_model_server.py}
CLAUDE_VERSION=${CLAUDE_VERSION:-2.1.197}
CODEX_VERSION=${CODEX_VERSION:-0.169.0}
GEMINI_VERSION=${GEMINI_VERSION:-0.61.0}
export FAKE_REPLY=${FAKE_REPLY:-'{"summary":"ok","severity":"low","files_changed":[],"approved":true}'}
CLIS=("$@")
[ ${#CLIS[@]} -eq 0 ] && CLIS=(claude codex gemini)

die() { echo "real-clis: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is required for the fake model server"
[ -f "$FAKE_SERVER" ] || die "fake model server not found at $FAKE_SERVER; set FAKE_SERVER"
for cli in "${CLIS[@]}"; do
  case $cli in claude | codex | gemini) ;; *) die "unknown CLI $cli (claude, codex or gemini)" ;; esac
done

if [ -z "${REAL_CLIS_INSIDE:-}" ]; then
  # 1. Install the pinned versions (outside the namespace: npm needs the registry).
  installed() { # $1 = npm package: its version in PREFIX, or nothing
    node -p "require('$PREFIX/node_modules/$1/package.json').version" 2>/dev/null || true
  }
  want=()
  for cli in "${CLIS[@]}"; do
    case $cli in
      claude) pkg=@anthropic-ai/claude-code version=$CLAUDE_VERSION ;;
      codex) pkg=@openai/codex version=$CODEX_VERSION ;;
      gemini) pkg=@google/gemini-cli version=$GEMINI_VERSION ;;
    esac
    [ "$(installed "$pkg")" = "$version" ] || want+=("$pkg@$version")
  done
  if [ ${#want[@]} -gt 0 ]; then
    command -v npm >/dev/null || die "npm is required (Node >= 20)"
    echo "== installing into $PREFIX: ${want[*]}"
    npm install --no-fund --no-audit --prefix "$PREFIX" "${want[@]}"
  fi

  # 2. Build the examples, with the real HOME and network (cargo may need them).
  echo "== building smithers-agents/examples/cli_smoke.rs and examples/bugfix.rs"
  (cd "$ROOT" && cargo build --quiet -p smithers-agents --example cli_smoke)
  if [ -f "$ROOT/examples/bugfix.rs" ]; then (cd "$ROOT" && cargo build --quiet --example bugfix); fi

  # 3. Re-run inside a private network namespace when we can.
  if [ -z "${HOST_NET:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null \
    && unshare -n -m true 2>/dev/null; then
    echo "== entering a private network namespace (loopback only)"
    exec unshare -n -m -- env REAL_CLIS_INSIDE=1 bash "$0" "$@"
  fi
  echo "== WARNING: running on the host network (not root, or HOST_NET=1); only the quiet settings keep the CLIs local"
  REAL_CLIS_INSIDE=host
fi
if [ "$REAL_CLIS_INSIDE" = 1 ]; then
  ip link set lo up
  RESOLV=$(mktemp /tmp/smithers-real-clis-resolv.XXXXXX)
  echo "nameserver 127.0.0.1" >"$RESOLV"
  mount --bind "$RESOLV" /etc/resolv.conf
  echo "== network namespace: $(ip -brief link | tr -s ' ' | tr '\n' ';')"
fi
export PATH="$PREFIX/node_modules/.bin:$PATH"
for cli in "${CLIS[@]}"; do echo "== $cli --version: $("$cli" --version 2>/dev/null | tail -1)"; done

SCRATCH=$(mktemp -d /tmp/smithers-real-clis-run.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "${RESOLV:-}" ] && rm -f "$RESOLV"
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

SMOKE="$ROOT/target/debug/examples/cli_smoke"
EXAMPLE=
[ -x "$ROOT/target/debug/examples/bugfix" ] && EXAMPLE="$ROOT/target/debug/examples/bugfix"

# What the CLI sent in its smoke run: whether the options cli_smoke sets (see its header) arrived.
check_requests() { # $1 = cli
  python3 - "$1" "$SCRATCH/requests.jsonl" <<'PY'
import json, sys
cli, log = sys.argv[1], sys.argv[2]
marker = "SMITHERS-SMOKE-SYSTEM-PROMPT"
family = {"claude": "/v1/messages", "codex": "/v1/responses", "gemini": "/v1beta/"}[cli]
reqs = [json.loads(l) for l in open(log)]
reqs = [r for r in reqs if r.get("method") == "POST" and family in r.get("path", "")]
marked = [r for r in reqs if marker in json.dumps(r.get("body"))]
problems = []
if not marked:
    problems.append("no request carried the system prompt marker")
for r in marked[:1]:
    body = r.get("body") or {}
    if cli == "claude":
        tools = [t.get("name") for t in body.get("tools", [])]
        if "WebFetch" in tools or "WebSearch" in tools:
            problems.append("--disallowedTools ignored: WebFetch/WebSearch still offered")
        print(f"   request check: system prompt appended, tools offered: {len(tools)}, "
              f"StructuredOutput offered: {'StructuredOutput' in tools}")
    elif cli == "codex":
        dev = [m for m in body.get("input", []) if m.get("role") == "developer" and marker in json.dumps(m)]
        print(f"   request check: developer_instructions sent as {len(dev)} developer message(s); "
              f"text.format: {json.dumps(body.get('text', {}).get('format', {}).get('type'))}")
        if not dev:
            problems.append("the marker is not in a developer message")
    else:
        system = json.dumps(body.get("systemInstruction"))
        print(f"   request check: systemInstruction is {len(system)} chars (replaced by GEMINI_SYSTEM_MD), "
              f"model in path: {r['path'].split('/')[3].split(':')[0]}")
        if marker not in system:
            problems.append("GEMINI_SYSTEM_MD ignored: the marker is not in systemInstruction")
for p in problems:
    print("   request check FAILED:", p)
sys.exit(1 if problems else 0)
PY
}

INPUT='{"description":"add() in src/lib.rs subtracts instead of adding"}'
FAILED=()
CASES=${CASES:-smoke example large 429}
want_case() { [[ " $CASES " == *" $1 "* ]]; }

control() { # $1 = JSON for the fake server's /__control, or @FILE holding it
  python3 - "$BASE" "$1" <<'PY'
import sys, urllib.request
body = open(sys.argv[2][1:], "rb").read() if sys.argv[2].startswith("@") else sys.argv[2].encode()
req = urllib.request.Request(sys.argv[1] + "/__control", data=body,
                             headers={"content-type": "application/json"}, method="POST")
urllib.request.urlopen(req, timeout=30).read()
PY
}

# A ~5 MB reply of varied text, as one JSON object satisfying the smoke schema.
BIG_REPLY="$SCRATCH/big-reply.json"
python3 - "$BIG_REPLY" <<'PY'
import json, sys
words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
lines, total, i = [], 0, 0
while total < 5 * 1024 * 1024:
    line = f"{i:07d} " + " ".join(words[(i * 7 + k) % 10] for k in range(i % 9 + 1))
    lines.append(line); total += len(line) + 1; i += 1
reply = json.dumps({"summary": "\n".join(lines), "severity": "low"})
open(sys.argv[1], "w").write(reply)
open(sys.argv[1] + ".control", "w").write(json.dumps({"reply": reply}))
PY

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
  setup_case "$cli"
  export CASE
  model=; [ "$cli" = gemini ] && model=gemini-2.5-pro  # the default `auto` makes a routing call first
  if want_case smoke; then
    echo "== $cli: smoke run"
    if (cd "$CASE/repo" && timeout 180 bash -c "env_$cli \"\$0\" $cli $model" "$SMOKE" </dev/null >"$CASE/smoke.jsonl" 2>"$CASE/smoke.err"); then
      cut -c1-300 "$CASE/smoke.jsonl"
      check_requests "$cli" || FAILED+=("$cli options")
    else
      echo "   FAILED (rc=$?); stderr tail:"; tail -n 5 "$CASE/smoke.err"; FAILED+=("$cli smoke")
    fi
  fi
  if want_case example && [ -n "$EXAMPLE" ]; then
    echo "== $cli: examples/bugfix.rs"
    if (cd "$CASE/repo" && timeout 300 bash -c "env_$cli \"\$0\" run --input \"\$1\"" "$EXAMPLE" "$INPUT" </dev/null); then
      echo "   ok"
      (cd "$CASE/repo" && "$EXAMPLE" status | tail -n 6)
    else
      echo "   FAILED (rc=$?)"; FAILED+=("$cli example")
    fi
  fi
  if want_case large; then
    echo "== $cli: large reply ($(wc -c <"$BIG_REPLY") bytes)"
    control "@$BIG_REPLY.control"
    if (cd "$CASE/repo" && timeout 300 bash -c "env_$cli \"\$0\" $cli $model" "$SMOKE" </dev/null >"$CASE/large.jsonl" 2>"$CASE/large.err"); then
      if python3 - "$CASE/large.jsonl" "$BIG_REPLY" <<'PY'
import json, sys
got = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
want = json.load(open(sys.argv[2]))
summary = (got.get("json") or {}).get("summary", "")
print(f"   received {len(summary)} of {len(want['summary'])} characters of the summary; "
      f"text {len(got.get('text', ''))} chars; usage {got.get('usage')}")
sys.exit(0 if summary == want["summary"] else 1)
PY
      then echo "   ok: the whole reply arrived"
      else echo "   FAILED: the reply arrived cut"; FAILED+=("$cli large"); fi
    else
      echo "   FAILED (rc=$?); stderr tail:"; tail -n 5 "$CASE/large.err" | cut -c1-300; FAILED+=("$cli large")
    fi
    control "$(python3 -c 'import json,sys; print(json.dumps({"reply": sys.argv[1]}))' "$FAKE_REPLY")"
  fi
  if want_case 429 && [ -n "$EXAMPLE" ]; then
    echo "== $cli: HTTP 429 (retry-after: 1) until the first attempt has failed, then ok"
    rm -rf "$CASE/repo/.smithers"
    control '{"mode": "error429"}'
    (cd "$CASE/repo" && timeout 300 bash -c "env_$cli \"\$0\" run --input \"\$1\"" "$EXAMPLE" "$INPUT" </dev/null >"$CASE/429.out" 2>"$CASE/429.err") &
    RUN_PID=$!
    # Recover once attempt 1 is recorded failed (the CLI's own retries are spent by then).
    python3 - "$CASE/repo/.smithers/smithers.db" <<'PY'
import sqlite3, sys, time
for _ in range(1200):
    try:
        c = sqlite3.connect(sys.argv[1], timeout=1)
        n = c.execute("SELECT count(*) FROM _smithers_attempts WHERE status = 'failed'").fetchone()[0]
        if n:
            break
    except sqlite3.Error:
        pass
    time.sleep(0.1)
PY
    control '{"mode": "ok"}'
    if wait "$RUN_PID"; then
      echo "   ok"
    else
      echo "   FAILED (rc=$?)"; tail -n 5 "$CASE/429.err" | cut -c1-300; FAILED+=("$cli 429")
    fi
    python3 - "$CASE/repo/.smithers/smithers.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for node, attempt, status, error, ms in c.execute(
        "SELECT node_id, attempt, status, error, duration_ms FROM _smithers_attempts ORDER BY started_at"):
    print(f"   attempt {node}#{attempt} {status} {ms} ms {(error or '')[:160]}")
for (payload,) in c.execute("SELECT payload FROM _smithers_events WHERE kind = 'node_retrying'"):
    print(f"   retrying: {payload[:220]}")
PY
  fi
done

echo "== model requests seen by the fake server: $(cat "$SCRATCH/requests.jsonl" 2>/dev/null | wc -l)"
if [ ${#FAILED[@]} -gt 0 ]; then die "failed: ${FAILED[*]}"; fi
echo "== all good"
