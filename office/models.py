"""What the controller keeps about office (Collabora Online) nodes.

* :class:`OfficeConsole`: the admin console credentials of each office node, generated on
  its first converge. The password is stored Fernet-encrypted (``ums.crypto``); the node
  gets only its PBKDF2 hash (``secure_password`` in coolwsd.xml).
* :class:`OfficeWiring`: the fingerprint of the office and cloud files nodes last wired
  together (``office.reconcile``): when it changes, the nodes that render it converge.
"""

from __future__ import annotations

from django.db import models

from servers.models import Node
from ums.crypto import EncryptedTextField


class OfficeConsole(models.Model):
    node = models.OneToOneField(
        Node, on_delete=models.CASCADE, primary_key=True, related_name="office_console"
    )
    username = models.CharField(max_length=64, default="ums-admin")
    password = EncryptedTextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.username}@{self.node_id}"


class OfficeWiring(models.Model):
    key = models.CharField(max_length=32, primary_key=True)
    fingerprint = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key
