"""Django settings, read only from the environment (see .env.example and the README).

PostgreSQL is the only database engine. Without any variable set the project runs
embedded: the PostgreSQL that ``make run`` starts under ``var/`` (ums.embedded.postgres), a
secret key kept there, and tasks run by the embedded task runner (ums.embedded.runner), a
separate process woken by NOTIFY. ``DATABASE_URL`` and ``CELERY_BROKER_URL`` switch it to
your PostgreSQL, Redis and separate Celery workers.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from ums.embedded.postgres import database_settings as embedded_database
from ums.env import (
    ImproperEnvironment,
    env_bool,
    env_int,
    env_json_object,
    env_list,
    env_str,
)
from ums.secrets_files import read_or_create_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("UMS_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("UMS_DEBUG", False)

# Every link the portal builds (mail, redirects, bootstrap URL) starts from this base, never
# from the Host header, so a forged Host cannot poison them.
BASE_URL = (env_str("UMS_BASE_URL", "http://127.0.0.1:8000") or "").rstrip("/")
_base = urlsplit(BASE_URL)
if _base.scheme not in {"http", "https"} or not _base.hostname:
    raise ImproperEnvironment(f"UMS_BASE_URL must be an http(s) URL, got {BASE_URL!r}")
USES_HTTPS = _base.scheme == "https"

# Unset (or empty), a random key is generated once under UMS_VAR_DIR, which every process
# of one install shares (the compose stack mounts one volume there). A placeholder or short
# key is refused unless UMS_DEBUG is on: sessions, password-reset links and signed values
# would be forgeable by anyone who read the example file.
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or read_or_create_secret(VAR_DIR / "secret_key")
if not DEBUG and (len(SECRET_KEY) < 40 or "change-me" in SECRET_KEY.lower()):
    raise ImproperEnvironment(
        "DJANGO_SECRET_KEY is a placeholder or shorter than 40 characters: set a random one "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))') or leave it empty to "
        "have one generated under UMS_VAR_DIR"
    )
ALLOWED_HOSTS = env_list("UMS_ALLOWED_HOSTS", [_base.hostname, "127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = [f"{_base.scheme}://{_base.netloc}"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ums",
    "tenants",
    "audit",
    "mail",
    "servers",
    "deploy",
    "spamhold",
    "cloudfiles",
    "office",
    "backup",
    "licensing",
    "usage",
    "chat",
    "replication",
    "clouddb",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ums.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "djangorestframework_camel_case.middleware.CamelCaseMiddleWare",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "ums.middleware.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After authentication and messages: session timeouts and revocation, then the
    # second-factor gate (challenge or enrolment before anything else).
    "tenants.middleware.IdentityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ums.urls"
WSGI_APPLICATION = "ums.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ums.portal.context.portal",
            ],
        },
    }
]

# PostgreSQL only (as NetBox): the models rely on its JSON containment, full-text search,
# row locks, advisory locks and the append-only audit trigger. Without DATABASE_URL this is
# the embedded server that `make run` starts (a Unix socket under var/).
_DATABASE_URL = env_str("DATABASE_URL")
EMBEDDED_POSTGRES = not _DATABASE_URL
_CONN_MAX_AGE = env_int("UMS_DB_CONN_MAX_AGE", 60, minimum=0)
if _DATABASE_URL:
    _default_db = dj_database_url.parse(_DATABASE_URL, conn_max_age=_CONN_MAX_AGE)
    if _default_db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperEnvironment(
            f"DATABASE_URL must be a postgres:// URL (PostgreSQL is the only engine), "
            f"got {_default_db['ENGINE']}"
        )
    # The password may live in a file (a Docker secret, a volume) instead of the URL.
    _password_file = env_str("UMS_DATABASE_PASSWORD_FILE")
    if _password_file:
        _default_db["PASSWORD"] = Path(_password_file).read_text().strip()
else:
    _default_db = {**embedded_database(VAR_DIR), "CONN_MAX_AGE": _CONN_MAX_AGE}
DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_USER_MODEL = "tenants.Administrator"
AUTHENTICATION_BACKENDS = [
    "tenants.auth.AdministratorBackend",
    # Customer directories (LDAPS / StartTLS); answers only for usernames in a directory's
    # login domains and works without the optional python-ldap install (see tenants.sso.ldap).
    "tenants.sso.ldap.CustomerLDAPBackend",
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
PASSWORD_HASHERS = [
    "ums.hashers.TunableArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
# Django's defaults (RFC 9106 second recommendation). The test suite lowers them for speed.
ARGON2_TIME_COST = env_int("UMS_ARGON2_TIME_COST", 2, minimum=1)
ARGON2_MEMORY_KIB = env_int("UMS_ARGON2_MEMORY_KIB", 102400, minimum=8)
ARGON2_PARALLELISM = env_int("UMS_ARGON2_PARALLELISM", 8, minimum=1)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "tenants.password_validators.ControlCharacterValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("UMS_PASSWORD_MIN_LENGTH", 12, minimum=8)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling: failures counted per account and per source address in the database,
# so neither a restart nor a cleared cookie resets them.
LOGIN_THROTTLE_FAILURES = env_int("UMS_LOGIN_THROTTLE_FAILURES", 5, minimum=1)
LOGIN_THROTTLE_IP_FAILURES = env_int("UMS_LOGIN_THROTTLE_IP_FAILURES", 20, minimum=1)
LOGIN_THROTTLE_WINDOW_SECONDS = env_int("UMS_LOGIN_THROTTLE_WINDOW", 900, minimum=1)

# Sessions and cookies
SESSION_COOKIE_AGE = env_int("UMS_SESSION_MAX_AGE", 12 * 3600, minimum=60)
# Enforced by tenants.middleware on top of the cookie's age: a session ends after this long
# without a request, and this long after its login whatever happens.
SESSION_IDLE_TIMEOUT = env_int("UMS_SESSION_IDLE_TIMEOUT", 30 * 60, minimum=60)
SESSION_ABSOLUTE_TIMEOUT = env_int("UMS_SESSION_ABSOLUTE_TIMEOUT", SESSION_COOKIE_AGE, minimum=60)

# Second factor (TOTP, security keys, recovery codes). Failed attempts are counted per
# account in the database within UMS_LOGIN_THROTTLE_WINDOW.
TWO_FACTOR_THROTTLE_FAILURES = env_int("UMS_2FA_THROTTLE_FAILURES", 5, minimum=1)

# Password reset by mail (tenants/password_reset.py): links built from UMS_BASE_URL, valid
# this many seconds and only until used (Django's token covers the password hash);
# requests throttled per account and per address within an hour.
PASSWORD_RESET_TIMEOUT = env_int("UMS_PASSWORD_RESET_TIMEOUT", 3600, minimum=300)
PASSWORD_RESET_PER_ACCOUNT = env_int("UMS_PASSWORD_RESET_PER_ACCOUNT", 3, minimum=1)
PASSWORD_RESET_PER_ADDRESS = env_int("UMS_PASSWORD_RESET_PER_ADDRESS", 10, minimum=1)
# Outgoing mail of the controller itself (password reset links).
EMAIL_HOST = env_str("UMS_EMAIL_HOST", "localhost") or "localhost"
EMAIL_PORT = env_int("UMS_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("UMS_EMAIL_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("UMS_EMAIL_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("UMS_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("UMS_EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("UMS_EMAIL_FROM", f"UMS <ums@{_base.hostname}>") or "ums@localhost"
# How recent a second-factor check must be for sensitive steps (creating an API token,
# adding or removing a factor).
TWO_FACTOR_FRESH_SECONDS = env_int("UMS_2FA_FRESH_SECONDS", 300, minimum=30)
# The name authenticator apps show next to the account.
TOTP_ISSUER = env_str("UMS_TOTP_ISSUER", "UMS")
# The product name Roundcube shows where a domain has no webmail name of its own.
UMS_WEBMAIL_PRODUCT_NAME = env_str("UMS_WEBMAIL_PRODUCT_NAME", "Webmail")
# Seconds to wait for a customer's LDAP directory before telling the user it is unreachable.
LDAP_TIMEOUT = env_int("UMS_LDAP_TIMEOUT", 5, minimum=1)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("UMS_SECURE_COOKIES", USES_HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
LANGUAGE_COOKIE_SECURE = SESSION_COOKIE_SECURE
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
SECURE_SSL_REDIRECT = env_bool("UMS_SSL_REDIRECT", USES_HTTPS)
SECURE_HSTS_SECONDS = env_int("UMS_HSTS_SECONDS", 31536000 if USES_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = USES_HTTPS
SECURE_HSTS_PRELOAD = env_bool("UMS_HSTS_PRELOAD", USES_HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("UMS_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many reverse proxies in front of the portal append to X-Forwarded-For; 0 trusts none.
TRUSTED_PROXY_COUNT = env_int("UMS_TRUSTED_PROXY_COUNT", 0, minimum=0)

# Internationalisation: the product sheet promises English, Russian and Mongolian.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian")), ("mn", _("Mongolian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("UMS_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the finders when collectstatic has not run (tests, first start).
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Secrets at rest (SSH keys, TOTP seeds, bind passwords) are Fernet-encrypted. The first key
# encrypts; the others still decrypt, which is how a key is rotated.
ENCRYPTION_KEYS = env_list("UMS_ENCRYPTION_KEYS") or [
    read_or_create_secret(VAR_DIR / "encryption_key", fernet=True)
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["ums.api.permissions.AreaPermission"],
    "DEFAULT_RENDERER_CLASSES": [
        "ums.api.renderers.FastCamelCaseJSONRenderer",
        "djangorestframework_camel_case.render.CamelCaseBrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "djangorestframework_camel_case.parser.CamelCaseJSONParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["ums.api.filters.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "ums.api.pagination.KeysetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ums.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {},
}
# The API speaks camelCase, query parameters included (``?subtreeOf=``, ``?pageSize=``).
# Audit "changes" and job "params"/"result" are evidence and payloads, not API field names:
# they are passed through untouched (and not walked, which saves time on big lists).
JSON_CAMEL_CASE = {
    "JSON_UNDERSCOREIZE": {
        "no_underscore_before_number": True,
        "ignore_fields": ("changes", "params", "result"),
    }
}
SPECTACULAR_SETTINGS = {
    "TITLE": "UMS API",
    "DESCRIPTION": "Management API of the UMS unified messaging suite.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "CAMELIZE_NAMES": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.contrib.djangorestframework_camel_case.camelize_serializer_fields",
        "drf_spectacular.hooks.postprocess_schema_enums",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    # Operations grouped by area (customers, mail, servers...), in the docs and `manage.py
    # spectacular` alike.
    "DEFAULT_GENERATOR_CLASS": "ums.api.schema.TaggedSchemaGenerator",
    # The permission codes appear in several serializers: one schema enum for all of them.
    "ENUM_NAME_OVERRIDES": {
        "PermissionCodeEnum": "tenants.permissions.ALL",
        "HeldMessageStatusEnum": "spamhold.models.Status",
        "HeldMessageReasonEnum": "spamhold.models.Reason",
        "BackupTargetKindEnum": "backup.choices.TargetKind",
        "SnapshotTierEnum": "backup.choices.SnapshotTier",
        "AliasKindEnum": "mail.choices.ALIAS_KINDS",
        "SieveModeEnum": "mail.choices.SIEVE_MODES",
        "RestoreModeEnum": "backup.restore.MODES",
    },
}

# How jobs reach whatever runs them (ums.jobs._dispatch):
# - "celery": CELERY_BROKER_URL is set; separate `celery worker` and `celery beat` processes.
# - "embedded": no broker; the embedded task runner (`manage.py run_tasks`, started by
#   `make run`) is woken by a PostgreSQL NOTIFY after commit. Never inside the request.
# - "eager": UMS_TASKS_IN_PROCESS=true runs each job inside the process that enqueued it,
#   right after commit (the test suite; a request then waits for its job).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND")
if env_bool("UMS_TASKS_IN_PROCESS", False):
    UMS_TASK_MODE = "eager"
elif CELERY_BROKER_URL:
    UMS_TASK_MODE = "celery"
else:
    UMS_TASK_MODE = "embedded"
# Without a broker any direct `.delay()` runs in the caller rather than failing to connect
# to a broker that does not exist; jobs themselves go through _dispatch.
CELERY_TASK_ALWAYS_EAGER = UMS_TASK_MODE != "celery"
# Beat keeps its schedule state in a file; it must be writable (the image's code is not).
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Extra modules a worker imports at start (plugins, or the test suite's job kinds).
CELERY_IMPORTS = env_list("UMS_CELERY_IMPORTS")

# Periodic work run by ``celery -A ums beat`` (or the embedded task runner).
UMS_METRICS_INTERVAL = env_int("UMS_METRICS_INTERVAL", 60, minimum=5)
UMS_METRICS_CONCURRENCY = env_int("UMS_METRICS_CONCURRENCY", 20, minimum=1)
# Seconds a worker keeps a node's SSH connection open between metric sweeps (0: a new
# connection each sweep). Host and controller keys are checked again at each new one.
UMS_METRICS_PERSIST_SECONDS = env_int("UMS_METRICS_PERSIST_SECONDS", 600, minimum=0)
UMS_METRICS_RETENTION_DAYS = env_int("UMS_METRICS_RETENTION_DAYS", 30, minimum=1)
# Held mail: how often SMTP nodes' hold queues are read, how many nodes at once, how long
# a node's ingest may hold its lock, the default retention (customers can override it)
# and how much of one message the content view fetches.
UMS_SPAMHOLD_INGEST_INTERVAL = env_int("UMS_SPAMHOLD_INGEST_INTERVAL", 60, minimum=5)
UMS_SPAMHOLD_CONCURRENCY = env_int("UMS_SPAMHOLD_CONCURRENCY", 10, minimum=1)
UMS_SPAMHOLD_INGEST_LOCK_SECONDS = env_int("UMS_SPAMHOLD_INGEST_LOCK_SECONDS", 600, minimum=30)
UMS_SPAMHOLD_RETENTION_DAYS = env_int("UMS_SPAMHOLD_RETENTION_DAYS", 30, minimum=1)
UMS_SPAMHOLD_CONTENT_LIMIT = env_int("UMS_SPAMHOLD_CONTENT_LIMIT", 2 * 1024 * 1024, minimum=1024)
# Seconds a portal read from a node (held content, receipt log) may take per step
# (connect, SSH banner, login, command), without retries: a slow node answers with a clear
# message instead of holding the request.
UMS_SPAMHOLD_CONTENT_TIMEOUT = env_int("UMS_SPAMHOLD_CONTENT_TIMEOUT", 8, minimum=1)
# A release/delete job holds its request for this many seconds, renewed per batch: after a
# dead worker the reconciler re-drives the request once it ran out. A request failing on
# its node is retried with backoff up to UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS times.
UMS_SPAMHOLD_INTENT_LEASE = env_int("UMS_SPAMHOLD_INTENT_LEASE", 20, minimum=5)
UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS = env_int("UMS_SPAMHOLD_INTENT_MAX_ATTEMPTS", 8, minimum=1)
# Backups (backup/): the key everything written to a backup target is encrypted with
# (client side, AES-256-GCM). Unset: generated once under UMS_VAR_DIR/backup_key. Keep a
# copy away from the controller: a dump nobody can decrypt is lost data.
UMS_BACKUP_KEY = env_str("UMS_BACKUP_KEY", "") or read_or_create_secret(
    VAR_DIR / "backup_key", fernet=True
)
# Team chat (chat/): seconds after which every Zulip organisation is synced again even
# without a change in the tree (undoes changes made on the chat server by hand).
UMS_CHAT_RESYNC_INTERVAL = env_int("UMS_CHAT_RESYNC_INTERVAL", 3600, minimum=60)
# How often (seconds) the snapshot scheduler looks for domains due a ZFS snapshot.
UMS_SNAPSHOT_INTERVAL = env_int("UMS_SNAPSHOT_INTERVAL", 300, minimum=30)
# Seconds a restore or archive clone (and an empty folder under their mount roots) is kept
# after its job ended or after it appeared, before a snapshot pass sweeps it (see
# backup/leftover_sweep.py): a job's own clean-up may still be under way.
UMS_BACKUP_SWEEP_GRACE_SECONDS = env_int("UMS_BACKUP_SWEEP_GRACE_SECONDS", 600, minimum=60)
# Maildir exports kept on the controller: how long (seconds) a download link works; the
# file is deleted after that by backup.cleanup_exports, run every UMS_EXPORT_CLEANUP_INTERVAL.
UMS_EXPORT_LINK_TTL = env_int("UMS_EXPORT_LINK_TTL", 86400, minimum=60)
UMS_EXPORT_CLEANUP_INTERVAL = env_int("UMS_EXPORT_CLEANUP_INTERVAL", 900, minimum=30)

# How often (seconds) beat looks for IMAP nodes due an off-node copy (each node's own
# interval is its setting; this is only how often that is checked).
UMS_OFFNODE_CHECK_INTERVAL = env_int("UMS_OFFNODE_CHECK_INTERVAL", 300, minimum=30)
# How often the reconciler loop re-drives work a dead process left (see ums.reconcile).
UMS_RECONCILE_INTERVAL = env_int("UMS_RECONCILE_INTERVAL", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {"task": "ums.reconcile", "schedule": UMS_RECONCILE_INTERVAL},
    "collect-metrics": {"task": "deploy.collect_metrics", "schedule": UMS_METRICS_INTERVAL},
    "measure-zone-latency": {"task": "deploy.measure_zone_latency", "schedule": 600},
    "downsample-metrics": {"task": "servers.downsample_metrics", "schedule": 3600},
    "purge-login-failures": {"task": "tenants.purge_login_failures", "schedule": 3600},
    # Load balancer certificates last 90 days and are renewed with 30 days left.
    "renew-lb-certificates": {"task": "deploy.renew_lb_certificates", "schedule": 86400},
    "purge-identity-records": {"task": "tenants.purge_identity_records", "schedule": 3600},
    "ingest-held-mail": {"task": "spamhold.ingest_all", "schedule": UMS_SPAMHOLD_INGEST_INTERVAL},
    "expire-held-mail": {"task": "spamhold.expire", "schedule": 900},
    "recheck-dkim-rotations": {"task": "mail.recheck_dkim_rotations", "schedule": 3600},
    "schedule-snapshots": {"task": "backup.schedule_snapshots", "schedule": UMS_SNAPSHOT_INTERVAL},
    "cleanup-exports": {"task": "backup.cleanup_exports", "schedule": UMS_EXPORT_CLEANUP_INTERVAL},
    "schedule-offnode": {"task": "backup.schedule_offnode", "schedule": UMS_OFFNODE_CHECK_INTERVAL},
}
# Rule and signature updates on SMTP nodes (deploy/rule_updates): the mirror (http(s) base
# URL; empty: no updates), the SpamAssassin channels and ClamAV signature files it serves,
# and how often (seconds) every active SMTP node is updated from it.
UMS_RULES_MIRROR_URL = env_str("UMS_RULES_MIRROR_URL", "") or ""
UMS_SA_UPDATE_CHANNELS = env_list("UMS_SA_UPDATE_CHANNELS")
UMS_CLAMAV_SIGNATURES = env_list("UMS_CLAMAV_SIGNATURES")
UMS_RULES_UPDATE_INTERVAL = env_int("UMS_RULES_UPDATE_INTERVAL", 86400, minimum=300)
CELERY_BEAT_SCHEDULE["update-rules"] = {
    "task": "deploy.update_rules",
    "schedule": UMS_RULES_UPDATE_INTERVAL,
}
# Controller dumps (backup/dumps.py): daily at UMS_DUMP_TIME ("HH:MM" UTC; empty: only
# "Dump now"), UMS_DUMP_KEEP kept per target, to the top-level customers' targets or only
# those named in UMS_DUMP_TARGETS (ids or names); staged (encrypted) in UMS_DUMP_STAGING_DIR.
UMS_DUMP_TIME = env_str("UMS_DUMP_TIME", "02:30") or ""
if UMS_DUMP_TIME and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", UMS_DUMP_TIME):
    raise ImproperlyConfigured(f"UMS_DUMP_TIME must be HH:MM (UTC), not {UMS_DUMP_TIME!r}")
UMS_DUMP_KEEP = env_int("UMS_DUMP_KEEP", 7, minimum=1)
# A failed scheduled dump is started again this many minutes after it failed (0: only at
# the next day's UMS_DUMP_TIME).
UMS_DUMP_RETRY_MINUTES = env_int("UMS_DUMP_RETRY_MINUTES", 60, minimum=0)
UMS_DUMP_TARGETS = env_list("UMS_DUMP_TARGETS")
UMS_DUMP_STAGING_DIR = env_str("UMS_DUMP_STAGING_DIR", "") or str(VAR_DIR / "dumps")
CELERY_BEAT_SCHEDULE["schedule-dump"] = {"task": "backup.schedule_dump", "schedule": 300}
# Storage tiering (backup/tiering.py): how often (seconds) every mail store with a tiering
# policy gets a pass moving idle messages to its tier.
UMS_TIER_INTERVAL = env_int("UMS_TIER_INTERVAL", 21600, minimum=300)
CELERY_BEAT_SCHEDULE["schedule-tiering"] = {
    "task": "backup.schedule_tiering",
    "schedule": UMS_TIER_INTERVAL,
}
# Usage: how often (seconds) used space is measured on the IMAP nodes (one command per
# node; quota warnings follow each run), and how often today's usage snapshot is rewritten.
UMS_USAGE_COLLECT_INTERVAL = env_int("UMS_USAGE_COLLECT_INTERVAL", 3600, minimum=60)
UMS_USAGE_SNAPSHOT_INTERVAL = env_int("UMS_USAGE_SNAPSHOT_INTERVAL", 3600, minimum=300)
CELERY_BEAT_SCHEDULE["collect-used-space"] = {
    "task": "usage.collect_used_space",
    "schedule": UMS_USAGE_COLLECT_INTERVAL,
}
# Replication (replication/tasks.py): how often (seconds) replicas are assigned, due syncs
# started, lag alerts checked and automatic failovers considered.
UMS_REPLICATION_CHECK_INTERVAL = env_int("UMS_REPLICATION_CHECK_INTERVAL", 60, minimum=10)
CELERY_BEAT_SCHEDULE["schedule-replication"] = {
    "task": "replication.schedule",
    "schedule": UMS_REPLICATION_CHECK_INTERVAL,
}
# Automatic failover (replication/autofailover.py): how often (seconds) the primaries whose
# failover is automatic (mail domains and cloud databases) get a TCP connect to their SSH
# and service ports, its timeout, and how many failures in a row (spanning at least the
# policy's delay) make a primary down. Independent of the metric sweep.
UMS_FAILOVER_PROBE_INTERVAL = env_int("UMS_FAILOVER_PROBE_INTERVAL", 10, minimum=2)
UMS_FAILOVER_PROBE_TIMEOUT = env_int("UMS_FAILOVER_PROBE_TIMEOUT", 2, minimum=1)
UMS_FAILOVER_PROBE_FAILURES = env_int("UMS_FAILOVER_PROBE_FAILURES", 3, minimum=2)
CELERY_BEAT_SCHEDULE["probe-primaries"] = {
    "task": "replication.probe",
    "schedule": UMS_FAILOVER_PROBE_INTERVAL,
}
# Cloud database replication (clouddb/reconcile.py): how often (seconds) each zone's
# cloud DB nodes are checked (primary, replicas seeded and replicating, lag, Nextcloud's
# dbhost), and how long a pass holds a zone (renewed while it copies).
UMS_CLOUDDB_CHECK_INTERVAL = env_int("UMS_CLOUDDB_CHECK_INTERVAL", 60, minimum=1)
UMS_CLOUDDB_LEASE_SECONDS = env_int("UMS_CLOUDDB_LEASE_SECONDS", 120, minimum=5)
CELERY_BEAT_SCHEDULE["reconcile-clouddb"] = {
    "task": "clouddb.reconcile",
    "schedule": UMS_CLOUDDB_CHECK_INTERVAL,
}
# Cloud files used space (one occ command per cloud files node) on the same interval.
CELERY_BEAT_SCHEDULE["collect-cloud-used-space"] = {
    "task": "cloudfiles.collect_used_space",
    "schedule": UMS_USAGE_COLLECT_INTERVAL,
}
CELERY_BEAT_SCHEDULE["usage-snapshot"] = {
    "task": "usage.take_snapshot",
    "schedule": UMS_USAGE_SNAPSHOT_INTERVAL,
}
# Last month's report to its recipients, once each (checked as often as snapshots).
CELERY_BEAT_SCHEDULE["usage-monthly-reports"] = {
    "task": "usage.send_monthly_reports",
    "schedule": UMS_USAGE_SNAPSHOT_INTERVAL,
}

# Every periodic task is a level-triggered pass: one that waited in the broker longer than
# its own interval is superseded by the next, so it expires instead of running. Without
# this, a worker back after an outage ran every probe, sweep and check beat queued meanwhile
# in one burst (hundreds of liveness probes, metrics sweeps of every node).
for _entry in CELERY_BEAT_SCHEDULE.values():
    if isinstance(_entry["schedule"], int | float):
        _entry.setdefault("options", {}).setdefault("expires", max(float(_entry["schedule"]), 30.0))

# Node configuration: converge nodes when mail changes, and run a full converge (packages
# included) when a node is approved.
UMS_AUTO_CONVERGE = env_bool("UMS_AUTO_CONVERGE", True)
UMS_CONVERGE_ON_APPROVAL = env_bool("UMS_CONVERGE_ON_APPROVAL", True)
# Options of the configuration rendered onto nodes (mail root, TLS floor, ZFS pool, spam
# and greylisting knobs...): a JSON object checked at start-up against deploy.node_settings.
UMS_CONVERGE = env_json_object("UMS_NODE_SETTINGS", {})
# Crash safety (ums.jobs, deploy.dirty): a running job whose heartbeat is older than
# UMS_JOB_STALE_SECONDS lost its worker and is run again, at most UMS_JOB_MAX_ATTEMPTS
# times; a node's converge lease lasts UMS_CONVERGE_LEASE_SECONDS unless renewed; a failed
# converge is retried with backoff up to UMS_CONVERGE_RETRY_MAX_SECONDS apart.
UMS_JOB_STALE_SECONDS = env_int("UMS_JOB_STALE_SECONDS", 20, minimum=3)
UMS_JOB_MAX_ATTEMPTS = env_int("UMS_JOB_MAX_ATTEMPTS", 5, minimum=1)
UMS_CONVERGE_LEASE_SECONDS = env_int("UMS_CONVERGE_LEASE_SECONDS", 30, minimum=3)
UMS_CONVERGE_RETRY_MAX_SECONDS = env_int("UMS_CONVERGE_RETRY_MAX_SECONDS", 300, minimum=5)
# DKIM DNS check (mail.dkim_dns): resolvers as "ip" or "ip:port", comma-separated; empty
# uses the system's (/etc/resolv.conf). Only the check uses them, never mail delivery.
UMS_DNS_RESOLVER = env_list("UMS_DNS_RESOLVER", [])

# bootstrapcore.sh registrations accepted per client address (DRF rate syntax).
NODE_REGISTER_THROTTLE_RATE = env_str("UMS_NODE_REGISTER_RATE", "30/minute")

# SSH to nodes
UMS_SSH_CONNECT_TIMEOUT = env_int("UMS_SSH_CONNECT_TIMEOUT", 10, minimum=1)
UMS_SSH_COMMAND_TIMEOUT = env_int("UMS_SSH_COMMAND_TIMEOUT", 300, minimum=1)
UMS_SSH_RETRIES = env_int("UMS_SSH_RETRIES", 3, minimum=0)
# Storage stop/start: seconds before the reconciler tries a failed storage job again.
UMS_STORAGE_RETRY_SECONDS = env_int("UMS_STORAGE_RETRY_SECONDS", 60, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("UMS_LOG_LEVEL", "INFO")},
}

# ACME for load balancer names marked "acme" (deploy/lb_certificates.py). Unset: Let's
# Encrypt production; empty: ACME off (every name keeps the local CA). The CA bundle
# verifies the ACME server's HTTPS (default: certifi's roots, not REQUESTS_CA_BUNDLE).
UMS_ACME_DIRECTORY = (
    env_str("UMS_ACME_DIRECTORY", "https://acme-v02.api.letsencrypt.org/directory") or ""
)
UMS_ACME_EMAIL = env_str("UMS_ACME_EMAIL", "") or ""
UMS_ACME_CA_BUNDLE = env_str("UMS_ACME_CA_BUNDLE", "") or ""
# How the CA checks control of a name: "http-01" (the load balancers answer on port 80) or
# "dns-01" (a TXT record through RFC 2136 updates to UMS_ACME_DNS_SERVER, signed with the
# TSIG key; deploy/services/nginx/acme_dns.py).
UMS_ACME_CHALLENGE = env_str("UMS_ACME_CHALLENGE", "http-01") or "http-01"
if UMS_ACME_CHALLENGE not in ("http-01", "dns-01"):
    raise ImproperlyConfigured("UMS_ACME_CHALLENGE must be http-01 or dns-01")
UMS_ACME_DNS_SERVER = env_str("UMS_ACME_DNS_SERVER", "") or ""  # host or host:port (53)
UMS_ACME_DNS_ZONE = env_str("UMS_ACME_DNS_ZONE", "") or ""
UMS_ACME_DNS_TSIG_KEY_NAME = env_str("UMS_ACME_DNS_TSIG_KEY_NAME", "") or ""
UMS_ACME_DNS_TSIG_SECRET = env_str("UMS_ACME_DNS_TSIG_SECRET", "") or ""
UMS_ACME_DNS_TSIG_ALGORITHM = env_str("UMS_ACME_DNS_TSIG_ALGORITHM", "hmac-sha256") or "hmac-sha256"
UMS_ACME_DNS_PROPAGATION_SECONDS = env_int("UMS_ACME_DNS_PROPAGATION_SECONDS", 0, minimum=0)
if UMS_ACME_CHALLENGE == "dns-01" and not all(
    (UMS_ACME_DNS_SERVER, UMS_ACME_DNS_ZONE, UMS_ACME_DNS_TSIG_KEY_NAME, UMS_ACME_DNS_TSIG_SECRET)
):
    raise ImproperlyConfigured(
        "UMS_ACME_CHALLENGE=dns-01 needs UMS_ACME_DNS_SERVER, UMS_ACME_DNS_ZONE, "
        "UMS_ACME_DNS_TSIG_KEY_NAME and UMS_ACME_DNS_TSIG_SECRET"
    )

# Request bodies: a CSV import of 100,000 mailboxes (up to 20 MB, mail.csv_import.MAX_BYTES)
# sent as JSON through the API is larger than Django's default of 2.5 MB; the import
# checks its own limit on the decoded text.
DATA_UPLOAD_MAX_MEMORY_SIZE = 24 * 1024 * 1024
