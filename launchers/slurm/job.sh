# What our sbatch scripts share (sourced by launchers/*.sbatch after they found the repository):
# the environment, the checks made before anything starts, per-restart logs, and the requeue on
# preemption. The scripts themselves hold the #SBATCH lines and name their config.
#
# Variables (environment; set them in the script's header or on the sbatch command line):
#   CONFIG          the YAML config, relative to the repository (each script has its default)
#   MODEL_PATH, TRAIN_FILES, VAL_FILES, RUN_DIR
#                   the model, the data and the run directory (checkpoints, metrics.jsonl); each maps
#                   to a config key (see require / optional below) that a key=value argument can set instead
#   VENV            the virtual environment (default: the repository's .venv; none with CONTAINER_IMAGE)
#   LOG_DIR         default logs/<job name>-<job id>; each run of the job logs into LOG_DIR/restart_<N>/
#                   (N = SLURM_RESTART_COUNT): job.log (this script, Ray, the driver) and one log per Ray node
#   MAX_RESTARTS=20 requeues after a preemption, at most
#
# Sourced with the user's arguments: `source "$REPO/launchers/slurm/job.sh" "$@"`.
user_args=("$@")
source "$REPO/launchers/slurm/lib.sh"
cd "$REPO" || die "$EX_USAGE" "cannot enter the repository $REPO"

[ -n "${SLURM_JOB_ID:-}" ] || die "$EX_USAGE" "not inside a Slurm job: submit it with sbatch"
overrides=()   # key=value pairs the script derives; the user's own come after them and win
missing=()

# require VAR KEY: VAR's value becomes KEY=value, unless KEY=... is among the user's arguments.
require() {
  if [ -n "${!1:-}" ]; then overrides+=("$2=${!1}")
  elif ! _given "$2"; then missing+=("$1 (or pass $2=...)")
  fi
}
optional() { [ -z "${!1:-}" ] || overrides+=("$2=${!1}"); }
_given() { local arg; for arg in "${user_args[@]}"; do [[ $arg == "$1="* ]] && return 0; done; return 1; }

# start_job: checks the settings (one line each, before anything starts), activates the environment
# and opens this run's log directory.
start_job() {
  [ ${#missing[@]} = 0 ] || die "$EX_USAGE" "required variable(s) not set: ${missing[*]}"
  [ -f "$CONFIG" ] || die "$EX_USAGE" "CONFIG=$CONFIG: no such file in $REPO"
  local arg
  for arg in "${user_args[@]}"; do
    [[ $arg == *=* ]] || die "$EX_USAGE" "arguments must be key=value config overrides, got '$arg'"
  done
  container_setup
  if [ -n "${VENV:-}" ] || [ -z "${CONTAINER_IMAGE:-}" ]; then
    VENV=${VENV:-$REPO/.venv}
    [ -x "$VENV/bin/python" ] || die "$EX_USAGE" "VENV=$VENV has no bin/python (build it: bash tools/setup_env.sh)"
    export VIRTUAL_ENV=$VENV PATH="$VENV/bin:$PATH"
  fi
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  restart=${SLURM_RESTART_COUNT:-0}
  LOG_DIR=${LOG_DIR:-$REPO/logs/$SLURM_JOB_NAME-$SLURM_JOB_ID}
  export RAY_LOG_DIR=$LOG_DIR/restart_$restart
  mkdir -p "$RAY_LOG_DIR" || die "$EX_USAGE" "cannot create $RAY_LOG_DIR"
  launcher_log=$RAY_LOG_DIR/job.log
  local python=${VENV:+$VENV/bin/python}
  say "job $SLURM_JOB_ID, run $restart, on $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST); logs in $RAY_LOG_DIR;" \
      "python ${python:-of $CONTAINER_IMAGE}"
}

# run_requeueing COMMAND...: runs COMMAND (output also to this run's job.log), forwards SIGUSR1 to it,
# and requeues the job when it stopped for a preemption: it exited PREEMPTED_EXIT_CODE (it saved a
# checkpoint), or it failed after the signal (the requeued run resumes from the last periodic
# checkpoint). Exits with COMMAND's exit code.
run_requeueing() {
  start_child bash -c 'exec "$@" > >(tee -a "$0") 2>&1' "$launcher_log" "$@"
  wait_first "$child_pid"
  local rc=$first_rc
  if [ "$rc" = "$PREEMPTED_EXIT_CODE" ] || { [ "$preempt_requested" = 1 ] && [ "$rc" != 0 ]; }; then
    if [ "$restart" -ge "${MAX_RESTARTS:-20}" ]; then
      say "exit $rc after a preemption, but the job already ran $((restart + 1)) times (MAX_RESTARTS=${MAX_RESTARTS:-20}): not requeued"
    elif scontrol requeue "$SLURM_JOB_ID"; then
      say "exit $rc after a preemption: job $SLURM_JOB_ID requeued (run $((restart + 1)) resumes from the last checkpoint)"
    else
      say "error: scontrol requeue $SLURM_JOB_ID failed"
    fi
  fi
  exit "$rc"
}

# run_rl_job: the RL driver (python -m harness.main_ppo) on Ray across the allocation, with the
# allocation's node count, the head's address and resume_mode=auto; the user's key=value last.
run_rl_job() {
  require MODEL_PATH actor_rollout_ref.model.path
  require TRAIN_FILES data.train_files
  optional VAL_FILES data.val_files
  optional RUN_DIR trainer.default_local_dir
  overrides+=(trainer.nnodes="$SLURM_JOB_NUM_NODES" trainer.resume_mode=auto)
  local gpus=${SLURM_GPUS_PER_NODE:-}
  gpus=${gpus##*:}  # "a100:8" -> 8
  [ -z "$gpus" ] || [ "$gpus" = 0 ] || overrides+=(trainer.n_gpus_per_node="$gpus")
  start_job
  # ray_init.address is read when the driver starts, after ray_cluster.sh exported RAY_ADDRESS.
  run_requeueing bash launchers/slurm/ray_cluster.sh bash -c 'exec "$@" ray_init.address="$RAY_ADDRESS"' main_ppo \
    python -m harness.main_ppo --config "$CONFIG" "${overrides[@]}" "${user_args[@]}"
}

# run_sft_job: python -m harness.main_sft as srun ranks on every node (SLURM_PROCID, SLURM_NTASKS;
# rank 0 on this node at MASTER_ADDR:MASTER_PORT), resume_mode=auto; the user's key=value last.
run_sft_job() {
  require MODEL_PATH model.partial_pretrain
  require TRAIN_FILES data.train_files
  optional VAL_FILES data.val_files
  optional RUN_DIR trainer.default_local_dir
  overrides+=(trainer.resume_mode=auto)
  start_job
  MASTER_ADDR=$(local_address) || exit "$EX_USAGE"
  export MASTER_ADDR MASTER_PORT=${MASTER_PORT:-29500}
  local busy
  busy=$("${exec_container[@]}" python "$REPO/launchers/slurm/probe.py" ports "$MASTER_ADDR" MASTER_PORT="$MASTER_PORT" 2>&1) ||
    die "$EX_USAGE" "$busy"
  say "SFT on $SLURM_NTASKS rank(s), rank 0 at $MASTER_ADDR:$MASTER_PORT"
  # A rank that ends takes the others down 60 s later (a crashed rank would leave them waiting in a
  # collective); not at once, as --kill-on-bad-exit would: ranks stopping at a preemption exit 75 together.
  run_requeueing srun --wait=60 "${srun_container[@]}" \
    python -m harness.main_sft --config "$CONFIG" "${overrides[@]}" "${user_args[@]}"
}
