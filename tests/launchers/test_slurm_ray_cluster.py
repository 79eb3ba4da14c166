"""`launchers/slurm/ray_cluster.sh COMMAND` from a foreign batch script (as NeMo-Run's or a user's
own): Ray on both nodes, COMMAND on the head with RAY_ADDRESS (which the harness joins without
`ray_init.address`), COMMAND's exit code returned, Ray stopped afterwards."""
import subprocess
import time

import pytest

from tests.launchers.slurm_jobs import launcher_env, node2_port, read
from tests.trainer.ppo_runs import ROOT

pytestmark = pytest.mark.timeout(600)
COMMAND = """
import os, sys, ray
from harness.workers.ray_group import init_ray
init_ray(None, None, None, 200)  # no address given: RAY_ADDRESS from ray_cluster.sh
print("joined", os.environ["RAY_ADDRESS"], sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]))
sys.exit(3)
"""


def test_a_foreign_batch_script_gets_ray_on_both_nodes_and_the_commands_exit_code(slurm_cluster, tmp_path):
    env = launcher_env(tmp_path)
    (tmp_path / "command.py").write_text(COMMAND)
    script = tmp_path / "foreign.sbatch"
    script.write_text(f"#!/bin/bash\nexport PATH={ROOT}/.venv/bin:$PATH\n"
                      f"exec bash {ROOT}/launchers/slurm/ray_cluster.sh python {tmp_path / 'command.py'}\n")
    output = tmp_path / "slurm.out"
    job = slurm_cluster.sbatch(["--nodes=2", "--exclusive", f"--output={output}", str(script)], env=env, cwd=tmp_path)
    info = slurm_cluster.wait_for_end(job, timeout_s=400)
    text = read(output)
    assert info["ExitCode"] == "3:0", text[-4000:]  # COMMAND's own code
    assert f"joined 127.0.0.2:{env['RAY_PORT']} ['127.0.0.2', '127.0.0.3']" in text
    # Ray was stopped with the job: no raylet of either node is left (a few seconds' grace).
    ports = (env["RAY_NODE_MANAGER_PORT"], node2_port(env, "RAY_NODE_MANAGER_PORT"))
    deadline = time.monotonic() + 30
    while True:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        left = [port for port in ports if f"node_manager_port={port}" in ps or f"node-manager-port={port}" in ps]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not left, f"Ray processes with node manager port(s) {left} outlived the job"
