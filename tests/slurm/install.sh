#!/usr/bin/env bash
# Installs what the local SLURM cluster of tests/slurm needs (Debian bookworm: slurm-wlm 22.05 + munge)
# when it is missing. Part of `make test`'s set-up. Where it cannot install (not root, no apt-get) it
# says so and the SLURM tests skip with that reason; with CI=true that is an error instead.
# SKIP_SLURM=1 skips the install (and the SLURM tests then skip if the packages are absent).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
for b in munged slurmctld slurmd sinfo sbatch srun scontrol scancel squeue; do
    have "$b" || missing+=("$b")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cannot() {
    if [ "${CI:-}" = "true" ]; then
        echo "tests/slurm/install.sh: CI=true but SLURM cannot be installed: $1" >&2
        exit 1
    fi
    echo "tests/slurm/install.sh: SLURM tests will skip: $1 (missing: ${missing[*]})" >&2
    exit 0
}

[ "${SKIP_SLURM:-}" = "1" ] && cannot "SKIP_SLURM=1"
[ "$(id -u)" = "0" ] || cannot "installing Debian's slurm packages needs root (or: sudo bash tests/slurm/install.sh)"
command -v apt-get >/dev/null 2>&1 || cannot "no apt-get on this machine (install SLURM 22.05+ and munge yourself)"

echo "tests/slurm/install.sh: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: the daemons, the client tools and munge are all the local cluster uses.
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
for b in "${missing[@]}"; do
    have "$b" || { echo "tests/slurm/install.sh: $b still missing after apt-get install" >&2; exit 1; }
done
