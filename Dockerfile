# The controller image used by docker-compose.yml (web, worker and beat share it).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
# The `ldap` extra builds python-ldap: a compiler for the build, the LDAP libraries stay.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libldap2-dev libsasl2-dev \
    && pip install --no-cache-dir ".[ldap]" \
    && apt-get purge -y gcc && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY . .
RUN useradd --system --home /var/lib/ums ums && mkdir -p /var/lib/ums && chown ums /var/lib/ums
USER ums
EXPOSE 8000
