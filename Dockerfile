# The controller image used by docker-compose.yml (web, worker, beat, migrate and the
# one-shot secrets service share it).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UMS_VAR_DIR=/var/lib/ums
WORKDIR /app
COPY requirements/prod.txt requirements/
# Only the hashed lock (scripts/lock-requirements.sh): the base dependencies and the `ldap`
# extra, whose python-ldap builds here (a compiler for the build, the LDAP libraries stay).
# Not the `embedded` extra: the stack runs its own PostgreSQL service. postgresql-client
# (15 on this Debian, as the postgres:15 service) is pg_dump for the controller dumps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libldap2-dev libsasl2-dev postgresql-client \
    && pip install --no-cache-dir --require-hashes -r requirements/prod.txt \
    && apt-get purge -y gcc && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY . .
# Bytecode compiled once here: PYTHONDONTWRITEBYTECODE keeps the running containers from
# writing it, so without this every worker would compile the sources again on each start.
RUN python -m compileall -q /app
# Named volumes start as a copy of these folders, so they belong to ums from the start.
RUN useradd --system --home /var/lib/ums ums \
    && mkdir -p /var/lib/ums /run/ums-secrets \
    && chown ums /var/lib/ums /run/ums-secrets
USER ums
EXPOSE 8000
# Two workers per core, four threads each (gthread: keep-alive, waits on PostgreSQL
# overlap): see README "Production" and benchmarks/results/issue19_perf.md.
CMD ["gunicorn", "ums.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", \
     "--access-logfile", "-", "--no-control-socket"]
