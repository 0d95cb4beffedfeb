#!/bin/sh
# CodeBuild entrypoint of the worker: the dispatcher gave the build a ticket in its
# environment (SLUICE_TICKET_URL, SLUICE_TICKET_KEY, ...: see sluice_worker_aws::ticket); the worker
# binary redeems it for its dispatch payload and runs the order. SLUICE_WORKER_BIN overrides
# the binary (default: `worker` on PATH).
set -eu
exec "${SLUICE_WORKER_BIN:-worker}" --from-env
