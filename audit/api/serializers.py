from rest_framework import serializers

from ..models import AuditRecord


class AuditRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "seq",
            "timestamp",
            "actor_id",
            "actor_name",
            "source_ip",
            "channel",
            "request_id",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "customer_id",
            "changes",
            "hash",
        ]
        read_only_fields = fields
