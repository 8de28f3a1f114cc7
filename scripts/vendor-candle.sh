#!/usr/bin/env bash
# Rebuilds third_party/candle-core from the released crate and ragjet's small
# patch (third_party/candle-core.patch; what it changes and why is in the
# header of third_party/candle-core/Cargo.toml).
#
#   scripts/vendor-candle.sh           rebuild the folder (e.g. after editing the patch)
#   scripts/vendor-candle.sh --check   fail if the folder differs from crate + patch
#
# Updating candle is one step: change VERSION and SHA256 below, run the
# script, fix the patch if it no longer applies, and bump the version in the
# root Cargo.toml. The folder stays committed so that a clone builds offline
# with plain `cargo`; `--check` (run by scripts/test.sh) proves it is nothing
# but the released crate plus the patch.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.11.1
SHA256=d11c8be87cfbaef9ebb62fb3f850d1fc8e00cc1d11d393fdbe55a4d5c2cdb325
DEST=third_party/candle-core
PATCH=$PWD/third_party/candle-core.patch

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crate="$work/candle-core-$VERSION.crate"

cached=$(ls ~/.cargo/registry/cache/*/"candle-core-$VERSION.crate" 2>/dev/null | head -n1 || true)
if [ -n "$cached" ]; then
    cp "$cached" "$crate"
else
    curl -sSfL -o "$crate" "https://static.crates.io/crates/candle-core/candle-core-$VERSION.crate"
fi
echo "$SHA256  $crate" | sha256sum --check --quiet

tar xzf "$crate" -C "$work"
src="$work/candle-core-$VERSION"
# What the published crate carries beyond the library itself.
rm -rf "$src"/{tests,benches,examples,Cargo.toml.orig,.cargo_vcs_info.json,Cargo.lock}
(cd "$src" && git apply --whitespace=nowarn "$PATCH")

if [ "${1:-}" = "--check" ]; then
    if diff -r "$src" "$DEST" >/dev/null; then
        echo "$DEST is candle-core $VERSION + $(basename "$PATCH")"
    else
        diff -r "$src" "$DEST" | head -n 40 >&2
        echo "$DEST differs from candle-core $VERSION + $(basename "$PATCH"): run scripts/vendor-candle.sh" >&2
        exit 1
    fi
else
    rm -rf "$DEST"
    cp -r "$src" "$DEST"
    echo "rebuilt $DEST from candle-core $VERSION + $(basename "$PATCH")"
fi
