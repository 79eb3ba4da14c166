#!/usr/bin/env bash
# RAY_CMD for a bring-up test: on node2, Ray never starts (the step stays alive but never joins).
if [ "$SLURMD_NODENAME" = node2 ]; then exec sleep 3600; fi
exec ray "$@"
