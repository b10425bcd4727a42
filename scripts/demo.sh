#!/usr/bin/env bash
# kq's tutorial on the embedded sqlite driver (no broker, no configuration), in a temporary folder:
# the steps 5-11 of the PHP library's "Getting started", with kq commands.
set -euo pipefail

work=$(mktemp -d -t kq-demo.XXXXXX)
cleanup() {
    [[ -n "${consumer:-}" ]] && kill -TERM "$consumer" 2>/dev/null && wait "$consumer" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step kq echoback '"hello world"' -f testoutput.txt
kq echoback "hello world" -f testoutput.txt

step kq managedriver list
kq managedriver list

step kq consume demo --label testconsumer '&'
kq consume demo --label testconsumer &
consumer=$!

step kq queuecommand demo echoback '"hello world again"' -o f=testoutput2.txt
kq queuecommand demo echoback "hello world again" -o f=testoutput2.txt
step kq queuecommand demo echoback '"and once more"' -o f=testoutput2.txt
kq queuecommand demo echoback "and once more" -o f=testoutput2.txt

# The worker runs each command as a child process; wait for both lines (at most 30 s).
for _ in $(seq 300); do
    [[ -f testoutput2.txt && $(wc -l < testoutput2.txt) -ge 2 ]] && break
    sleep 0.1
done
step cat testoutput2.txt
cat testoutput2.txt
[[ $(wc -l < testoutput2.txt) -ge 2 ]] || { echo "the worker did not run both commands" >&2; exit 1; }

step kq managequeue info demo
kq managequeue info demo

step kill -TERM '$consumer'
kill -TERM "$consumer"
wait "$consumer"
consumer=
printf '\nDone: two commands were queued, executed by the worker, and acknowledged.\n'
