#!/bin/sh
# One step of the diamond: records when it started and ended, so the run shows which
# steps overlapped (the two middle ones do).
echo "$(date +%s.%N) start ${SLUICE_ORDER_NAME}"
sleep "${STEP_SECONDS:-1}"
echo "$(date +%s.%N) end ${SLUICE_ORDER_NAME}"
