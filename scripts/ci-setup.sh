#!/usr/bin/env bash
# CI setup: the tools the checks in `.ci/run` need, installed only when missing.
#
#   scripts/ci-setup.sh
#
# - cargo-machete (finds dependencies a crate declares but never uses), pinned and built with
#   `--locked` so CI does not pick up a new release by surprise. Installing it cold takes about
#   the time measured in the commit that added this script (see its message).
set -euo pipefail

CARGO_MACHETE_VERSION="${CARGO_MACHETE_VERSION:-0.9.2}"

if ! command -v cargo-machete >/dev/null 2>&1 \
    || ! cargo-machete --version 2>/dev/null | grep -q "$CARGO_MACHETE_VERSION"; then
    echo "ci-setup: installing cargo-machete $CARGO_MACHETE_VERSION" >&2
    cargo install cargo-machete --version "$CARGO_MACHETE_VERSION" --locked
fi
