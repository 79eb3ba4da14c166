"""RL training (PPO, GRPO and relatives): `python -m harness.main_ppo [--config FILE] key=value ...`

One driver process; it starts a private Ray cluster, or joins one (`ray_init.address=HOST:PORT` or
`auto`; without that key, the RAY_ADDRESS environment variable when set), and places the Megatron
workers there. Keys follow verl's PPO trainer (`algorithm.adv_estimator=grpo`,
`actor_rollout_ref.rollout.n=5`, `data.train_files=...`, `trainer.total_training_steps=...`) plus the
Megatron parallel sizes of each model (`actor_rollout_ref.actor.megatron.tensor_model_parallel_size`);
see harness/config/rl.py and configs/grpo_*.yaml, configs/ppo_*.yaml. Bad input (a missing path, a
value out of range, an impossible combination, an unreadable resume state) is refused in one line with
exit code 2 before Ray starts (harness/trainer/preflight.py); `--preflight` checks and exits.
SIGUSR1 makes it checkpoint after the current step and exit 75 (harness/trainer/preemption.py).
"""
import logging
import sys

from harness.config.loader import config_from_command_line
from harness.config.refusal import refuse
from harness.config.rl import RLConfig
from harness.trainer import preemption, preflight
from harness.trainer.memory_check import memory_check


def main(argv=None) -> int:
    preemption.install()  # SIGUSR1: checkpoint after the current step, exit PREEMPTED_EXIT_CODE (75)
    argv = sys.argv[1:] if argv is None else list(argv)
    config = config_from_command_line(RLConfig, [a for a in argv if a != "--preflight"])
    if config is None or preflight.refused(preflight.check_rl, config):
        return 2
    if not memory_check(config):  # the planner's explanation is printed
        return 2
    if "--preflight" in argv:
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    from harness.data import DataError
    from harness.trainer.ppo import run_ppo
    from harness.trainer.ppo_support import NonFiniteLossError

    try:
        result = run_ppo(config)
    except (DataError, ValueError) as e:
        return refuse(f"error: {e}")
    except NonFiniteLossError as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except preemption.Preempted as e:
        print(e, file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
    print(f"ppo finished: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
