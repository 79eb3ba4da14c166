#!/usr/bin/env bash
# Ray on a Slurm allocation, for any batch script (ours, NeMo-Run's, your own):
#
#   bash launchers/slurm/ray_cluster.sh [--] COMMAND [ARGS...]
#
# Call it from the batch script (the allocation's first node; not from inside an srun step). It
#   1. starts the Ray head on this node and one Ray worker on every other node (srun --overlap, one
#      task per node, with the CPUs Slurm gave the job there: cgroup limits and Ray agree);
#   2. waits, with bounds, for the head (RAY_HEAD_TIMEOUT_S) and for every node (RAY_NODES_TIMEOUT_S);
#      a node that does not join fails the job naming it, and if a Ray srun step dies the job ends at once;
#   3. runs COMMAND on this node with RAY_ADDRESS=<head ip>:<RAY_PORT> exported, while watching the
#      Ray nodes. SIGUSR1 (preemption, `--signal=B:USR1@N`) is forwarded to COMMAND's process (a
#      wrapper script must exec the program), which starts with SIGUSR1 ignored until the program
#      installs its handler (the harness does, first thing); it is re-sent every PREEMPT_RESEND_S
#      seconds until COMMAND ends, so one that came too early is not lost;
#   4. stops Ray by pid and exits with COMMAND's exit code (64: bad settings; 69: Ray did not come
#      up, or a Ray node died while COMMAND ran).
#
# Settings (environment variables; the defaults suit a real cluster, every port is configurable and
# outside Linux's ephemeral range and Ray's worker port range):
#   RAY_PORT=6379                 head: GCS port (RAY_ADDRESS=<head ip>:RAY_PORT)
#   RAY_CLIENT_SERVER_PORT=10001  head: Ray client server (ray://)
#   RAY_NODE_MANAGER_PORT=6800  RAY_OBJECT_MANAGER_PORT=6801  RAY_METRICS_EXPORT_PORT=6802
#   RAY_RUNTIME_ENV_AGENT_PORT=6803  RAY_DASHBOARD_AGENT_GRPC_PORT=6804  RAY_DASHBOARD_AGENT_LISTEN_PORT=6805
#                                 every node
#   RAY_MIN_WORKER_PORT=10002 RAY_MAX_WORKER_PORT=19999   every node: Ray worker processes
#   RAY_NODE_PORT_STRIDE=0        node i (0 = head) adds i x stride to its per-node ports: only for several
#                                 Slurm nodes on one host (the test cluster)
#   RAY_INCLUDE_DASHBOARD=false   true: the dashboard on RAY_DASHBOARD_PORT=8265 (needed by `ray job submit`)
#   RAY_NODE_INTERFACE            network interface whose IPv4 address Ray uses (multi-NIC nodes);
#                                 default: the node's NodeAddr from `scontrol show node`
#   RAY_NUM_CPUS / RAY_NUM_GPUS   per node; default: the job's CPUs on the node (SLURM_JOB_CPUS_PER_NODE)
#                                 and the step's GPUs (SLURM_GPUS_ON_NODE / CUDA_VISIBLE_DEVICES)
#   RAY_OBJECT_STORE_MEMORY       bytes per node (default: Ray's, 30% of memory)
#   RAY_TEMP_DIR                  Ray's session directory (default /tmp/ray)
#   RAY_HEAD_TIMEOUT_S=180        the head is up (also: reading the nodes' addresses; a node's `ray start`
#                                 that fails within it is retried, RAY_START_ATTEMPTS=3 times in all)
#   RAY_NODES_TIMEOUT_S=600       then every worker has joined
#   RAY_STOP_TIMEOUT_S=30         SIGTERM to SIGKILL when stopping COMMAND and Ray
#   RAY_LOG_DIR                   one log per Ray node (ray-head-NODE.log, ray-worker-NODE.log); default: the job output
#   RAY_CMD=ray  PYTHON=python3   the executables (from PATH: activate the venv first)
#   CONTAINER_IMAGE, CONTAINER_RUNTIME=pyxis|apptainer, CONTAINER_MOUNTS: run Ray and COMMAND in a container
#   PREEMPT_RESEND_S=10           SIGUSR1 is re-sent this often until COMMAND ends (and first sent when
#                                 COMMAND is that old)
# RAY_AUTH_MODE=disabled is exported (one setting for every node and client, see notes/cluster.md).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAUNCHER=ray_cluster.sh
source "$here/lib.sh"

[ "${1:-}" != "--" ] || shift
[ $# -gt 0 ] || die "$EX_USAGE" "usage: ray_cluster.sh [--] COMMAND [ARGS...]"
[ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURMD_NODENAME:-}" ] ||
  die "$EX_USAGE" "not inside a Slurm allocation (SLURM_JOB_ID unset): call it from a batch script"

export RAY_PORT=${RAY_PORT:-6379} RAY_CLIENT_SERVER_PORT=${RAY_CLIENT_SERVER_PORT:-10001}
export RAY_NODE_MANAGER_PORT=${RAY_NODE_MANAGER_PORT:-6800} RAY_OBJECT_MANAGER_PORT=${RAY_OBJECT_MANAGER_PORT:-6801}
export RAY_METRICS_EXPORT_PORT=${RAY_METRICS_EXPORT_PORT:-6802} RAY_RUNTIME_ENV_AGENT_PORT=${RAY_RUNTIME_ENV_AGENT_PORT:-6803}
export RAY_DASHBOARD_AGENT_GRPC_PORT=${RAY_DASHBOARD_AGENT_GRPC_PORT:-6804}
export RAY_DASHBOARD_AGENT_LISTEN_PORT=${RAY_DASHBOARD_AGENT_LISTEN_PORT:-6805}
export RAY_MIN_WORKER_PORT=${RAY_MIN_WORKER_PORT:-10002} RAY_MAX_WORKER_PORT=${RAY_MAX_WORKER_PORT:-19999}
export RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265} RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
head_timeout=${RAY_HEAD_TIMEOUT_S:-180} nodes_timeout=${RAY_NODES_TIMEOUT_S:-600} stop_timeout=${RAY_STOP_TIMEOUT_S:-30}
if [ "$RAY_PORT" -ge "$RAY_MIN_WORKER_PORT" ] && [ "$RAY_PORT" -le "$RAY_MAX_WORKER_PORT" ]; then
  die "$EX_USAGE" "RAY_PORT=$RAY_PORT lies in the worker port range $RAY_MIN_WORKER_PORT-$RAY_MAX_WORKER_PORT"
fi
if [ -n "${RAY_LOG_DIR:-}" ]; then mkdir -p "$RAY_LOG_DIR" || die "$EX_USAGE" "cannot create RAY_LOG_DIR=$RAY_LOG_DIR"; fi
container_setup

mapfile -t nodes < <(allocation_nodes)
mapfile -t cpus < <(allocation_cpus)
head=$SLURMD_NODENAME
[[ " ${nodes[*]} " == *" $head "* ]] || die "$EX_USAGE" "this node ($head) is not in the allocation (${nodes[*]})"

ray_steps=()          # srun pids, one per Ray node
declare -A step_node  # srun pid -> "head on node1" / "worker on node2"
command_pid=""
cleanup() {
  trap - EXIT
  [ -z "$command_pid" ] || stop_pid "$command_pid" "$stop_timeout"
  local pid
  for pid in "${ray_steps[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${ray_steps[@]}"; do stop_pid "$pid" "$stop_timeout"; done
}
trap cleanup EXIT
fail() {  # fail CODE MESSAGE: stops what was started, then exits
  say "error: ${*:2}"
  cleanup
  exit "$1"
}
dead_step() {  # dead_step PID STATUS WHEN: a Ray step ended; its node's last error line, if it logged one
  local where=${step_node[$1]} log="" detail=""
  if [ -n "${RAY_LOG_DIR:-}" ]; then
    log=$RAY_LOG_DIR/ray-${where% on *}-${where#* on }.log
    detail=$(grep -h ': error: ' "$log" 2>/dev/null | tail -n 1 | sed 's/^.*: error: //')
  fi
  echo "the Ray $where exited with status $2 $3${detail:+: $detail}${log:+ (log: $log)}"
}

# 1. Every node's address, found on the node itself (RAY_NODE_INTERFACE, NodeAddr).
declare -A node_ip node_cpus
for i in "${!nodes[@]}"; do node_cpus[${nodes[$i]}]=${RAY_NUM_CPUS:-${cpus[$i]}}; done
addresses=$(timeout "$head_timeout" srun --overlap --nodes="${#nodes[@]}" --ntasks="${#nodes[@]}" --ntasks-per-node=1 \
            --kill-on-bad-exit=1 bash "$here/ray_node.sh" address) || fail "$EX_UNAVAILABLE" "could not read the nodes' addresses"
while read -r name ip; do node_ip[$name]=$ip; done <<<"$addresses"
for name in "${nodes[@]}"; do [ -n "${node_ip[$name]:-}" ] || fail "$EX_UNAVAILABLE" "no address from $name"; done
head_ip=${node_ip[$head]}
export RAY_ADDRESS="$head_ip:$RAY_PORT"

start_node() {  # start_node ROLE NODE INDEX [HEAD_IP]
  local log=()
  [ -z "${RAY_LOG_DIR:-}" ] || log=(--output="$RAY_LOG_DIR/ray-$1-$2.log")
  srun --overlap --nodes=1 --ntasks=1 -w "$2" --cpus-per-task="${node_cpus[$2]}" "${log[@]}" "${srun_container[@]}" \
    bash "$here/ray_node.sh" "$1" "$3" "${node_cpus[$2]}" ${4:+"$4"} &
  ray_steps+=($!)
  step_node[$!]="$1 on $2"
}

# 2. The head, then the workers, each phase bounded; a Ray step that dies ends it at once. The
# workers start once the head's raylet listens: a loaded head would otherwise miss Ray's own startup bound.
wait_for_ray() {  # wait_for_ray TIMEOUT_S SETTING NODE=IP...: the probe, watching every Ray step
  local probe_log probe_error
  probe_log=$(mktemp)
  "${exec_container[@]}" timeout "$(($1 + 60))" "${PYTHON:-python3}" "$here/probe.py" ray-nodes "$RAY_ADDRESS" "$@" \
    2>"$probe_log" &
  local waiter=$!
  wait_first "$waiter" "${ray_steps[@]}"
  probe_error=$(tail -n 1 "$probe_log")
  rm -f "$probe_log"
  if [ "$first_pid" != "$waiter" ]; then
    stop_pid "$waiter" 5
    fail "$EX_UNAVAILABLE" "$(dead_step "$first_pid" "$first_rc" "before every node joined")"
  fi
  [ "$first_rc" = 0 ] || fail "$EX_UNAVAILABLE" "${probe_error:-Ray did not come up (exit $first_rc)}"
}
say "starting Ray on ${#nodes[@]} node(s): head $head ($RAY_ADDRESS)"
start_node head "$head" 0
# The head's GCS and raylet ports open (cheap checks from here: nothing else loads the head meanwhile).
deadline=$((SECONDS + head_timeout))
until (exec 3<>"/dev/tcp/$head_ip/$RAY_PORT" && exec 4<>"/dev/tcp/$head_ip/$RAY_NODE_MANAGER_PORT") 2>/dev/null; do
  if ! kill -0 "${ray_steps[0]}" 2>/dev/null; then
    wait "${ray_steps[0]}"
    fail "$EX_UNAVAILABLE" "$(dead_step "${ray_steps[0]}" $? "before it opened its ports")"
  fi
  [ "$SECONDS" -lt "$deadline" ] ||
    fail "$EX_UNAVAILABLE" "the Ray head on $head did not open $RAY_ADDRESS within ${head_timeout} s (RAY_HEAD_TIMEOUT_S)"
  sleep 1
done
index=0
expected=()
for name in "${nodes[@]}"; do
  expected+=("$name=${node_ip[$name]}")
  [ "$name" = "$head" ] && continue
  index=$((index + 1))
  start_node worker "$name" "$index" "$head_ip"
done
wait_for_ray "$nodes_timeout" RAY_NODES_TIMEOUT_S "${expected[@]}"
say "Ray is up on ${#nodes[@]} node(s): ${expected[*]}"

# 3. COMMAND on this node; a Ray node that dies meanwhile ends it.
start_shielded_child "${exec_container[@]}" "$@"  # a SIGUSR1 that came during the bring-up follows it
command_pid=$child_pid
wait_first "$command_pid" "${ray_steps[@]}"
if [ "$first_pid" != "$command_pid" ]; then
  fail "$EX_UNAVAILABLE" "$(dead_step "$first_pid" "$first_rc" "while the command ran (stopped it)")"
fi
command_pid=""
rc=$first_rc
cleanup
exit "$rc"
