# Shell functions shared by the Slurm launchers (sourced, never run): messages, the allocation's
# nodes and CPUs, the optional container, and supervising a child while forwarding preemption.
#
# Exit codes of the launchers (besides the command's own):
EX_USAGE=64        # bad settings: a required variable, a missing file, a busy port
EX_UNAVAILABLE=69  # Ray did not come up in time, or a Ray node died
PREEMPTED_EXIT_CODE=75  # the harness checkpointed on SIGUSR1 (harness/trainer/preemption.py): requeue

# Messages name the script and the time: "grpo_32b.sbatch [12:00:01]: ..." (LAUNCHER is set by the
# sourcing script); also appended to $launcher_log when set (the run's job.log; a shell variable, not exported).
say() {
  local line="${LAUNCHER:-launcher} [$(date +%T)]: $*"
  echo "$line" >&2
  [ -z "${launcher_log:-}" ] || echo "$line" >>"$launcher_log"
}
die() {  # die CODE MESSAGE
  local code=$1; shift
  say "error: $*"
  exit "$code"
}

# The allocation's nodes, in Slurm's order (one per line).
allocation_nodes() { scontrol show hostnames "${SLURM_JOB_NODELIST:?}"; }

# The CPUs Slurm gave the job on each node, in node order: SLURM_JOB_CPUS_PER_NODE ("2(x3),4") expanded.
allocation_cpus() {
  local part count times i parts
  IFS=, read -ra parts <<<"${SLURM_JOB_CPUS_PER_NODE:?}"
  for part in "${parts[@]}"; do
    count=${part%%(*}; times=1
    [[ $part == *"(x"* ]] && { times=${part#*(x}; times=${times%)}; }
    for ((i = 0; i < times; i++)); do echo "$count"; done
  done
}

# The IPv4 address of this node: RAY_NODE_INTERFACE's (multi-NIC nodes), else Slurm's NodeAddr.
local_address() {
  if [ -n "${RAY_NODE_INTERFACE:-}" ]; then
    local addr
    addr=$(ip -4 -o addr show dev "$RAY_NODE_INTERFACE" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')
    [ -n "$addr" ] || die "$EX_USAGE" "RAY_NODE_INTERFACE=$RAY_NODE_INTERFACE: no IPv4 address on that interface"
    echo "$addr"
  else
    node_address "${SLURMD_NODENAME:?}"
  fi
}

# node_address NODE: the node's NodeAddr (`scontrol show node`), resolved to IPv4. Slurm's own
# addresses, since node names need not resolve, and the host's name may map to another interface.
node_address() {
  local addr
  addr=$(scontrol show node "$1" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
  [ -n "$addr" ] || die "$EX_USAGE" "scontrol show node $1 gave no NodeAddr"
  if [[ ! $addr =~ ^[0-9.]+$ ]]; then
    local name=$addr
    addr=$(getent ahostsv4 "$name" | awk '{print $1; exit}')
    [ -n "$addr" ] || die "$EX_USAGE" "NodeAddr $name of node $1 does not resolve to an IPv4 address"
  fi
  echo "$addr"
}

# CONTAINER_IMAGE set: pyxis options for srun (CONTAINER_RUNTIME=pyxis, the default) or an
# `apptainer exec` prefix (CONTAINER_RUNTIME=apptainer). Fills the arrays srun_container (options
# for srun) and exec_container (a prefix for commands run on the head node).
container_setup() {
  srun_container=(); exec_container=()
  [ -n "${CONTAINER_IMAGE:-}" ] || return 0
  case "${CONTAINER_RUNTIME:-pyxis}" in
    pyxis)
      srun_container=(--container-image="$CONTAINER_IMAGE" ${CONTAINER_MOUNTS:+--container-mounts="$CONTAINER_MOUNTS"}
                      --container-workdir="$PWD")
      exec_container=(srun --overlap --nodes=1 --ntasks=1 -w "$SLURMD_NODENAME" "${srun_container[@]}") ;;
    apptainer)
      local binds=${CONTAINER_MOUNTS:+--bind "$CONTAINER_MOUNTS"}
      exec_container=(apptainer exec --nv $binds "$CONTAINER_IMAGE") ;;
    *) die "$EX_USAGE" "CONTAINER_RUNTIME=$CONTAINER_RUNTIME: must be pyxis or apptainer" ;;
  esac
}

# ---- supervising a child with preemption forwarding ------------------------------------------------
# Slurm signals only the batch shell (`--signal=B:USR1@N`, `scancel --signal=USR1 --batch`); each
# launcher forwards SIGUSR1 to the child that must checkpoint (`preempt_target`), and re-sends it every
# PREEMPT_RESEND_S seconds until that child ends. A child younger than that is not signalled yet (its
# program may not have installed its handler, and the default action kills): the re-send reaches it.
preempt_requested=0
preempt_target=""
preempt_target_started=0
PREEMPT_RESEND_S=${PREEMPT_RESEND_S:-10}

_forward_preemption() {
  [ -n "$preempt_target" ] && [ $((SECONDS - preempt_target_started)) -ge "$PREEMPT_RESEND_S" ] || return 0
  kill -USR1 "$preempt_target" 2>/dev/null
  return 0
}
_on_preemption() {
  if [ "$preempt_requested" = 0 ]; then say "SIGUSR1: preemption or time limit ahead; asking the run to checkpoint and stop"; fi
  preempt_requested=1
  _forward_preemption
}
trap _on_preemption USR1

# start_child COMMAND...: COMMAND in the background (child_pid), the target of SIGUSR1. Only that
# process gets the signal, not its children (spawned helpers would die of it): a wrapper script must
# exec the program that handles it.
start_child() {
  "$@" &
  child_pid=$! preempt_target=$! preempt_target_started=$SECONDS
}

# start_shielded_child COMMAND...: the same, but COMMAND starts with SIGUSR1 ignored, so that not even
# a signal sent to it directly can kill it before its program installs a handler.
# Not for bash scripts that trap SIGUSR1: bash cannot trap a signal ignored when it started.
start_shielded_child() {
  ( trap '' USR1; exec "$@" ) &
  child_pid=$! preempt_target=$! preempt_target_started=$SECONDS
}

# wait_first PID...: waits until the first of PIDS ends; sets first_pid and first_rc. Trapped signals
# interrupt the wait and are handled; a pending preemption is re-sent to preempt_target meanwhile.
wait_first() {
  local ticker=""
  while :; do
    if [ "$preempt_requested" = 1 ] && [ -n "$preempt_target" ] && [ -z "$ticker" ]; then
      sleep "$PREEMPT_RESEND_S" & ticker=$!
    fi
    first_pid=""
    wait -n -p first_pid "$@" ${ticker:+"$ticker"}
    first_rc=$?
    [ -n "${first_pid:-}" ] || continue  # a trapped signal interrupted the wait (wait -p unsets the variable)
    if [ "$first_pid" = "$ticker" ]; then ticker=""; _forward_preemption; continue; fi
    [ -z "$ticker" ] || kill "$ticker" 2>/dev/null
    return 0
  done
}

# stop_pid PID [GRACE_S]: SIGTERM, then SIGKILL after GRACE_S seconds (default 30) if still alive.
stop_pid() {
  local pid=$1 grace=${2:-30} waited=0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((grace * 5)) ]; do sleep 0.2; waited=$((waited + 1)); done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}
