#!/usr/bin/env bash
# One node of the Ray cluster that ray_cluster.sh brings up (run by it through srun, one task per node):
#
#   ray_node.sh address                          prints "NODE IP" for this node
#   ray_node.sh head INDEX NUM_CPUS              Ray head (blocks until stopped)
#   ray_node.sh worker INDEX NUM_CPUS HEAD_IP    Ray worker joining HEAD_IP:RAY_PORT (blocks)
#
# The settings (RAY_PORT, RAY_NODE_INTERFACE, RAY_START_ATTEMPTS, ...) are described in ray_cluster.sh.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAUNCHER="ray_node.sh on ${SLURMD_NODENAME:-?}"
source "$here/lib.sh"

# This node's GPUs: RAY_NUM_GPUS, else what Slurm gave the step (SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES).
node_gpus() {
  if [ -n "${RAY_NUM_GPUS:-}" ]; then echo "$RAY_NUM_GPUS"
  elif [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then echo "$SLURM_GPUS_ON_NODE"
  elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .
  else echo 0
  fi
}

role=${1:?usage: ray_node.sh address|head|worker ...}
if [ "$role" = address ]; then
  ip=$(local_address) || exit "$EX_USAGE"
  echo "$SLURMD_NODENAME $ip"
  exit 0
fi
index=${2:?} cpus=${3:?}
ip=$(local_address) || exit "$EX_USAGE"
shift_by=$((index * ${RAY_NODE_PORT_STRIDE:-0}))  # several Slurm nodes on one host (the test cluster)
per_node() { echo $(($1 + shift_by)); }
named_ports=(RAY_NODE_MANAGER_PORT="$(per_node "$RAY_NODE_MANAGER_PORT")"
             RAY_OBJECT_MANAGER_PORT="$(per_node "$RAY_OBJECT_MANAGER_PORT")"
             RAY_METRICS_EXPORT_PORT="$(per_node "$RAY_METRICS_EXPORT_PORT")"
             RAY_RUNTIME_ENV_AGENT_PORT="$(per_node "$RAY_RUNTIME_ENV_AGENT_PORT")"
             RAY_DASHBOARD_AGENT_GRPC_PORT="$(per_node "$RAY_DASHBOARD_AGENT_GRPC_PORT")"
             RAY_DASHBOARD_AGENT_LISTEN_PORT="$(per_node "$RAY_DASHBOARD_AGENT_LISTEN_PORT")")
options=(--block --node-ip-address="$ip" --num-cpus="$cpus" --num-gpus="$(node_gpus)" --disable-usage-stats
         --min-worker-port="$(per_node "$RAY_MIN_WORKER_PORT")" --max-worker-port="$(per_node "$RAY_MAX_WORKER_PORT")")
for pair in "${named_ports[@]}"; do
  flag=${pair%%=*}; flag=${flag#RAY_}; flag=${flag,,}; flag=--${flag//_/-}
  options+=("$flag=${pair#*=}")
done
[ -z "${RAY_OBJECT_STORE_MEMORY:-}" ] || options+=(--object-store-memory="$RAY_OBJECT_STORE_MEMORY")
[ -z "${RAY_TEMP_DIR:-}" ] || options+=(--temp-dir="$RAY_TEMP_DIR")

case "$role" in
  head)
    named_ports+=(RAY_PORT="$RAY_PORT" RAY_CLIENT_SERVER_PORT="$RAY_CLIENT_SERVER_PORT")
    options+=(--head --port="$RAY_PORT" --ray-client-server-port="$RAY_CLIENT_SERVER_PORT")
    if [ "${RAY_INCLUDE_DASHBOARD:-false}" = true ]; then
      named_ports+=(RAY_DASHBOARD_PORT="$RAY_DASHBOARD_PORT")
      options+=(--include-dashboard=true --dashboard-host=0.0.0.0 --dashboard-port="$RAY_DASHBOARD_PORT")
    else
      options+=(--include-dashboard=false)
    fi ;;
  worker) options+=(--address="${4:?head ip}:$RAY_PORT") ;;
  *) die "$EX_USAGE" "unknown role $role (address, head or worker)" ;;
esac
ports_free() { busy=$("${PYTHON:-python3}" "$here/probe.py" ports "$ip" "${named_ports[@]}" 2>&1); }
ports_free || die "$EX_USAGE" "$busy"
# `ray start --block` returns only when Ray failed or was stopped. A failure within the startup bound
# is retried (Ray gives a raylet 30 s to register, which a loaded node can miss); a failed start
# stops its own processes, whose ports are free again a moment later.
attempts=${RAY_START_ATTEMPTS:-3}
for ((attempt = 1; ; attempt++)); do
  say "starting the Ray $role at $ip ($cpus CPUs, $(node_gpus) GPUs), attempt $attempt of $attempts"
  started=$SECONDS
  ${RAY_CMD:-ray} start "${options[@]}"
  rc=$?
  if [ "$attempt" -ge "$attempts" ] || [ $((SECONDS - started)) -gt "${RAY_HEAD_TIMEOUT_S:-180}" ]; then
    die "$rc" "ray start exited with status $rc"
  fi
  for _ in 1 2 3 4 5 6 7 8 9 10; do ports_free && break; sleep 1; done
  ports_free || die "$EX_USAGE" "$busy"
done
