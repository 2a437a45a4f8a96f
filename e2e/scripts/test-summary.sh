#!/usr/bin/env bash
# Summarise a `cargo test` log: the tests run in each suite (one line each), the tests
# that said they were skipped (only REKUBE_SKIP_PRIVILEGED=1 lets a test skip), and one
# closing line "rekube: N passed, N failed". Fails when a test failed, when nothing ran,
# or when a test suite (a crate's library or a tests/*.rs file) ran no test at all.
# Binaries' own unit-test harnesses (src/main.rs, src/bin/*.rs) may be empty.
set -euo pipefail
log=$1
awk '
  /^ *Running / {
    suite = $2; if (suite == "unittests") suite = $3
    crate = $NF; sub(/^\(/, "", crate); sub(/-[0-9a-f]+\)$/, "", crate); sub(/.*\//, "", crate)
    current = crate " " suite
    order[++n] = current
    next
  }
  /^test result:/ {
    p = 0; f = 0; ig = 0
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p = $(i-1)
      if ($(i) ~ /^failed;?$/) f = $(i-1)
      if ($(i) ~ /^ignored;?$/) ig = $(i-1)
    }
    passed[current] += p; failed[current] += f; ignored[current] += ig
    tp += p; tf += f
    next
  }
  END {
    empty = 0
    for (i = 1; i <= n; i++) {
      s = order[i]
      printf "  %-55s %5d passed %3d failed %3d ignored\n", s, passed[s], failed[s], ignored[s]
      split(s, parts, " ")
      if (passed[s] + failed[s] == 0 && parts[2] !~ /^src\/(main\.rs|bin\/)/) {
        printf "suite %s ran no test\n", s > "/dev/stderr"; empty++
      }
    }
    if (ENVIRON["REKUBE_SKIP_PRIVILEGED"] == "1") print "REKUBE_SKIP_PRIVILEGED=1: tests that need root, a cluster or busybox returned early"
    printf "rekube: %d passed, %d failed\n", tp, tf
    exit (tf > 0 || tp == 0 || empty > 0)
  }' "$log"
