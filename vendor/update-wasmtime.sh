#!/usr/bin/env bash
# Replaces vendor/wasmtime with the published wasmtime VERSION and applies
# vendor/wasmtime-pagemap-backport.patch (wasmtime 48.0.11's pagemap.rs on
# 48.0.10; see vendor/README.md).
#
#   vendor/update-wasmtime.sh VERSION   re-vendor (for example 48.0.12)
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
    VERSION="${1:?usage: vendor/update-wasmtime.sh VERSION (for example 48.0.12) | --verify}"
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
curl -sSfL "https://static.crates.io/crates/wasmtime/wasmtime-$VERSION.crate" -o "$TMP/wasmtime.crate" || {
    echo "error: cannot download wasmtime $VERSION from crates.io; check the version and the network" >&2
    exit 1
}
tar -xzf "$TMP/wasmtime.crate" -C "$TMP"
if ! $VERIFY && patch -p1 -R --dry-run -s -f -d "$TMP/wasmtime-$VERSION" < wasmtime-pagemap-backport.patch >/dev/null 2>&1; then
    echo "wasmtime $VERSION already carries the backported pagemap.rs: nothing to vendor. Remove vendor/ and the [patch.crates-io] section of Cargo.toml, then: cargo update -p wasmtime --precise $VERSION" >&2
    exit 2
fi
if ! patch -p1 --dry-run -s -f -d "$TMP/wasmtime-$VERSION" < wasmtime-pagemap-backport.patch; then
    echo "error: the patch does not apply to wasmtime $VERSION; compare its src/runtime/vm/sys/unix/pagemap.rs with the patch (vendor/README.md)" >&2
    exit 1
fi
patch -p1 -s -d "$TMP/wasmtime-$VERSION" < wasmtime-pagemap-backport.patch
if $VERIFY; then
    if ! diff -r "$TMP/wasmtime-$VERSION" wasmtime; then
        echo "error: vendor/wasmtime differs from wasmtime $VERSION as published plus vendor/wasmtime-pagemap-backport.patch (above); every change belongs in the patch file" >&2
        exit 1
    fi
    echo "vendor/wasmtime is wasmtime $VERSION as published plus the patch"
    exit 0
fi
rm -rf wasmtime
mv "$TMP/wasmtime-$VERSION" wasmtime
echo "vendor/wasmtime is now wasmtime $VERSION with the patch; next: cargo update -p wasmtime-environ, the tests and .ci/deny"
