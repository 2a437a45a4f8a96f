#!/usr/bin/env bash
# Sum the "test result:" lines of a cargo test log into one closing line,
# "rekube: N passed, N failed", and fail when any test failed or none ran.
set -euo pipefail
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "rekube: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$1"
