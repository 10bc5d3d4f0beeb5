# The controller image used by docker-compose.yml (web, worker and beat share it).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
RUN pip install --no-cache-dir .
COPY . .
RUN useradd --system --home /var/lib/ums ums && mkdir -p /var/lib/ums && chown ums /var/lib/ums
USER ums
EXPOSE 8000
