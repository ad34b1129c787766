#!/usr/bin/env bash
# nightly_job.sh: a stand-in for a cron job, for tools/demo.
#
#   onlyone run --lock /tmp/nightly.lock -- examples/nightly_job.sh FINISH_FIFO
#
# Prints "nightly job pid N started", then works until a line arrives on
# FINISH_FIFO (so the demo decides when it ends, without sleeps), then prints
# "nightly job pid N finished" and exits 0.
set -euo pipefail

if (($# != 1)); then
  echo "usage: $0 FINISH_FIFO" >&2
  exit 64
fi

printf 'nightly job pid %d started\n' "$$"
read -r _ <"$1"
printf 'nightly job pid %d finished\n' "$$"
