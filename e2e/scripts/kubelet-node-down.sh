#!/usr/bin/env bash
# Stop the kubelet node of kubelet-node-up.sh and remove everything it made.
set -euo pipefail
exec "$(cd "$(dirname "$0")" && pwd)/kubelet-node-up.sh" down
