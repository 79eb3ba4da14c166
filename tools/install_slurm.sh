#!/usr/bin/env bash
# Installs Slurm 22.05 (and munge, MariaDB for accounting) from Debian's packages, for the tests that
# run a real two-node Slurm cluster on loopback (tests/support/slurm_cluster.py). Needs root. Nothing
# is configured or started here: the test fixture writes its own configs in a temporary directory
# and starts (and stops) the daemons itself. Idempotent: returns at once when installed.
set -euo pipefail
packages=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
needed=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || needed+=("$package")
done
if [ ${#needed[@]} -eq 0 ]; then
  echo "slurm ready: slurm-client $(dpkg-query -W -f='${Version}' slurm-client)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install_slurm.sh: installing ${needed[*]} needs root (apt-get)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Not the slurm-wlm metapackage: it pulls about 20 -dev packages. Installing starts nothing (no systemd).
apt-get install -y -q --no-install-recommends "${needed[@]}"
echo "slurm ready: slurm-client $(dpkg-query -W -f='${Version}' slurm-client)"
