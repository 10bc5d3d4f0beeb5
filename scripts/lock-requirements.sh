#!/usr/bin/env bash
# Regenerate the hashed lock files under requirements/ from pyproject.toml (README, "Supply
# chain"). Every install (Makefile, Dockerfile) uses them with `pip install --require-hashes`.
#   test.txt  every extra (test, embedded, ldap): `make test`; solved first, the others
#             are constrained to it so one package has one version everywhere
#   dev.txt   test + embedded: `make venv` / `make run` (no LDAP headers needed)
#   prod.txt  the production image: the base dependencies and ldap
#   pip.txt   pip itself, for the virtualenv the Makefile creates
# Needs uv (`pip install uv`); UPGRADE=1 also moves unpinned transitive dependencies forward.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
common=(--quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28)
if [ "${UPGRADE:-0}" = 1 ]; then
    common+=(--upgrade)
fi
compile() {
    local out=$1
    shift
    "$uv" pip compile "${common[@]}" --custom-compile-command "scripts/lock-requirements.sh" \
        -o "requirements/$out" "$@"
}
compile test.txt pyproject.toml --extra test --extra embedded --extra ldap
compile dev.txt pyproject.toml --extra test --extra embedded -c requirements/test.txt
compile prod.txt pyproject.toml --extra ldap -c requirements/test.txt
pip_version=$(sed -n 's/^pip==\([^ ]*\).*/\1/p' requirements/test.txt)
echo "pip==${pip_version:?pip is missing from requirements/test.txt}" |
    compile pip.txt - 
