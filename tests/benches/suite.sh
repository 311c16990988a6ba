#!/usr/bin/env bash
# The whole benchmark suite, one command: runs every benchmark in
# tests/benches and gathers their summary tables (markdown) into one file,
# target/bench-summary.md, printed at the end. Each benchmark measures its
# own baseline in the same run and prints ratios; nothing here is asserted.
# Takes about 15 minutes on a 2-core machine. Run from anywhere:
#   tests/benches/suite.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/bench-summary.md
mkdir -p target
{
  echo "# algobanana benchmark summary"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(rustc --version)"
} > "$out"
for bench in plugin_call languages audit startup load; do
  echo "== $bench" >&2
  log="target/bench-$bench.log"
  cargo bench -p algobanana-tests --bench "$bench" 2>&1 | tee "$log" >&2
  {
    echo
    echo "## $bench"
    echo
    # The tables and the result lines each benchmark prints.
    grep -E '^\||^(burst|resident|targets|an empty|load:|round|fixed rates:)' "$log" || true
  } >> "$out"
done
echo
cat "$out"
