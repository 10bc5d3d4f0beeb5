"""What ``servers`` announces after commit; ``deploy`` listens and schedules node work."""

from django.dispatch import Signal

# Sent with ``node_id`` after a node was approved (its host keys are now pinned).
node_approved = Signal()
