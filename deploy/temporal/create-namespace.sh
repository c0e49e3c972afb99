#!/bin/sh
# Creates the namespace and the search attributes temporal-ciba uses (the worker would add
# missing ones too, but a cluster where workers may not do so needs them beforehand).
set -eu
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do sleep 2; done
temporal operator namespace describe -n "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 \
  || temporal operator namespace create -n "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS"
temporal operator search-attribute create -n "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
  --name CibaStatus --type Keyword --name CibaAuthReqId --type Keyword --name CibaDeadline --type Datetime
