"""Choices for zones and nodes: the product sheet's personalities and node lifecycle."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class SiteKind(models.TextChoices):
    DATACENTRE = "datacentre", _("Datacentre")
    PREMISES = "premises", _("Customer premises")


class Redundancy(models.TextChoices):
    HOT_HOT = "hot-hot", _("HOT-HOT")
    HOT_WARM = "hot-warm", _("HOT-WARM")


class Role(models.TextChoices):
    SMTP = "smtp", _("SMTP")
    IMAP = "imap", _("IMAP mail store")
    LOADBALANCER = "loadbalancer", _("Load balancer")
    WEBMAIL = "webmail", _("Webmail")
    CLOUDFILES = "cloudfiles", _("Cloud files")
    CLOUDDB = "clouddb", _("Cloud DB")
    CHAT = "chat", _("Chat")
    OFFICE = "office", _("Office")
    BACKUP = "backup", _("Backup")


class NodeStatus(models.TextChoices):
    PENDING = "pending", _("Pending approval")
    APPROVED = "approved", _("Approved")
    DEPLOYING = "deploying", _("Deploying")
    ACTIVE = "active", _("Active")
    DEGRADED = "degraded", _("Degraded")
    OFFLINE = "offline", _("Offline")
    DECOMMISSIONED = "decommissioned", _("Decommissioned")


# Nodes the controller talks to (collects metrics from, runs actions on).
REACHABLE_STATUSES = (
    NodeStatus.APPROVED,
    NodeStatus.DEPLOYING,
    NodeStatus.ACTIVE,
    NodeStatus.DEGRADED,
    NodeStatus.OFFLINE,
)

# The product sheet recommends under 80 ms between zones.
LATENCY_WARNING_MS = 80.0
