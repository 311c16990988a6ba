#!/usr/bin/env bash
# Replaces vendor/wasmtime with the published wasmtime VERSION and applies
# vendor/wasmtime-pagemap-regions.patch (see vendor/README.md).
#
#   vendor/update-wasmtime.sh VERSION   re-vendor (for example 48.0.11)
#   vendor/update-wasmtime.sh --verify  check that vendor/wasmtime is exactly
#                                       the published crate of its version
#                                       plus the patch (run by .ci/deny)
set -euo pipefail
cd "$(dirname "$0")"
VERIFY=false
if [ "${1:-}" = "--verify" ]; then
    VERIFY=true
    VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' wasmtime/Cargo.toml | head -1)
else
    VERSION="${1:?usage: vendor/update-wasmtime.sh VERSION (for example 48.0.11) | --verify}"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
curl -sSfL "https://static.crates.io/crates/wasmtime/wasmtime-$VERSION.crate" -o "$TMP/wasmtime.crate" || {
    echo "error: cannot download wasmtime $VERSION from crates.io; check the version and the network" >&2
    exit 1
}
tar -xzf "$TMP/wasmtime.crate" -C "$TMP"
if ! patch -p1 --dry-run -s -d "$TMP/wasmtime-$VERSION" < wasmtime-pagemap-regions.patch; then
    echo "error: the patch does not apply to wasmtime $VERSION; re-make it against the new source (vendor/README.md)" >&2
    exit 1
fi
patch -p1 -s -d "$TMP/wasmtime-$VERSION" < wasmtime-pagemap-regions.patch
if $VERIFY; then
    if ! diff -r "$TMP/wasmtime-$VERSION" wasmtime; then
        echo "error: vendor/wasmtime differs from wasmtime $VERSION as published plus vendor/wasmtime-pagemap-regions.patch (above); every change belongs in the patch file" >&2
        exit 1
    fi
    echo "vendor/wasmtime is wasmtime $VERSION as published plus the patch"
    exit 0
fi
rm -rf wasmtime
mv "$TMP/wasmtime-$VERSION" wasmtime
echo "vendor/wasmtime is now wasmtime $VERSION with the patch; next: cargo update -p wasmtime-environ, the tests and .ci/deny"
