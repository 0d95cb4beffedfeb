#!/bin/sh
# Prints a greeting from the order's code folder, with the ids Sluice gives every order.
echo "Hello, ${GREETING_NAME:-world}!"
echo "order ${SLUICE_ORDER_NUM} (${SLUICE_ORDER_NAME}) of run ${SLUICE_RUN_ID}, timeout ${SLUICE_TIMEOUT}s"
