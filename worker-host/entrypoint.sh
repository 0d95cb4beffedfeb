#!/bin/sh
# CodeBuild entrypoint of the worker: the dispatcher put the dispatch payload in the build's
# SLUICE_* environment (SLUICE_S3_LOCATION, SLUICE_RUN_ID, ...); the worker binary reads it
# back and runs the order. SLUICE_WORKER_BIN overrides the binary (default: `worker` on PATH).
set -eu
exec "${SLUICE_WORKER_BIN:-worker}" --from-env
