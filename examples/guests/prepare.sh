#!/bin/sh
# The shell step of the mixed example: checks the data folder the WebAssembly orders of the
# job mount, and reports what it found as an event (a JSON file in $SLUICE_EVENTS_DIR).
set -eu
files=$(ls data | wc -l)
bytes=$(cat data/* | wc -c)
echo "prepare: $files files, $bytes bytes in data/"
[ "$files" -gt 0 ] || { echo "prepare: data/ is empty" >&2; exit 1; }
printf '{"kind":"data.checked","message":"%s files, %s bytes","data":{"files":%s,"bytes":%s}}\n' \
  "$files" "$bytes" "$files" "$bytes" > "$SLUICE_EVENTS_DIR/$(date +%s%N)-data.checked.json"
