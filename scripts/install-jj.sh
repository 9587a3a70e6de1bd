#!/usr/bin/env bash
# Installs the jj (Jujutsu) binary the VCS tests use, from npm, into a scratch prefix, and prints
# its path. Debian has no jj package and `cargo install jj-cli` takes long on two cores; the npm
# package @smithers-orchestrator/jj-linux-x64 ships a prebuilt jj at bin/jj.
#
#   scripts/install-jj.sh            prints the path of jj (installing it when missing)
#
# Environment:
#   JJ_PREFIX=/tmp/smithers-jj       where the package is installed
#   JJ_NPM_VERSION=0.32.0            the npm package version (ships jj 0.42)
#
# Tests find jj through SMITHERS_JJ (the path printed here) or PATH:
#   export SMITHERS_JJ=$(scripts/install-jj.sh)
set -euo pipefail

JJ_PREFIX=${JJ_PREFIX:-/tmp/smithers-jj}
JJ_NPM_VERSION=${JJ_NPM_VERSION:-0.32.0}
PKG=@smithers-orchestrator/jj-linux-x64
JJ="$JJ_PREFIX/node_modules/$PKG/bin/jj"

die() { echo "install-jj: $*" >&2; exit 1; }
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "the npm package is built for Linux x86_64 only; install jj yourself and set SMITHERS_JJ"

installed=$(node -p "require('$JJ_PREFIX/node_modules/$PKG/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$JJ_NPM_VERSION" ] || [ ! -x "$JJ" ]; then
  command -v npm >/dev/null || die "npm is required (Node >= 20)"
  echo "install-jj: installing $PKG@$JJ_NPM_VERSION into $JJ_PREFIX" >&2
  npm install --no-fund --no-audit --silent --prefix "$JJ_PREFIX" "$PKG@$JJ_NPM_VERSION" >&2
fi
[ -x "$JJ" ] || die "$PKG did not install an executable at $JJ"
"$JJ" --version >&2
echo "$JJ"
