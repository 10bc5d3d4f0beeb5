"""API of the cloud database: per zone its primary, fencing epoch and members with their
measured lag (``/api/v1/clouddb/clusters/``), and the ``failover`` action (a job)."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from replication import policy as repl_policy
from servers.models import Node
from ums.api.fields import ScopedPrimaryKeyRelatedField
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.api.viewsets import ScopedReadOnlyViewSet

from .. import actions
from ..models import CloudDbCluster, CloudDbMember


class MemberSerializer(serializers.ModelSerializer):
    node_hostname = serializers.CharField(source="node.hostname")

    class Meta:
        model = CloudDbMember
        fields = [
            "node",
            "node_hostname",
            "state",
            "gtid_pos",
            "seconds_behind",
            "transactions_behind",
            "replicating",
            "read_only",
            "measured_at",
            "seeded_at",
            "lag_alerted",
            "last_error",
        ]


class ClusterSerializer(serializers.ModelSerializer):
    zone_name = serializers.CharField(source="zone.name")
    primary_hostname = serializers.CharField(source="primary.hostname", allow_null=True)
    members = MemberSerializer(many=True)
    max_lag_seconds = serializers.SerializerMethodField()

    class Meta:
        model = CloudDbCluster
        fields = ["id", "zone", "zone_name", "primary", "primary_hostname", "epoch",
                  "changed_at", "max_lag_seconds", "members"]  # fmt: skip

    def get_max_lag_seconds(self, cluster: CloudDbCluster) -> int:
        table = self.context.setdefault("_policies", repl_policy.policies_by_path())
        return repl_policy.effective(cluster.customer_path, table).max_lag_minutes * 60


class FailoverSerializer(StrictSerializer):
    node = ScopedPrimaryKeyRelatedField(
        queryset=Node.objects.all(), required=False, allow_null=True, default=None
    )
    force = serializers.BooleanField(required=False, default=False)


class CloudDbClusterViewSet(ScopedReadOnlyViewSet):
    """The cloud database of each zone: primary, epoch, members and their lag
    (``secondsBehind`` is MariaDB's Seconds_Behind_Master, ``transactionsBehind`` the
    GTID distance to the primary's binlog position at the last reconciler pass)."""

    queryset = CloudDbCluster.objects.select_related("zone", "primary").prefetch_related(
        Prefetch("members", queryset=CloudDbMember.objects.select_related("node"))
    )
    serializer_class = ClusterSerializer
    permission_area = "servers"
    ordering = "id"

    @extend_schema(request=FailoverSerializer, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def failover(self, request: Request, pk: str | None = None) -> Response:
        """Promote a replica (``node``, or the most up to date) while the primary is down;
        the job refuses while the primary answers unless ``force``."""
        cluster = self.get_object()
        serializer = FailoverSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        job = actions.start_failover(actor=request.user, cluster=cluster,
                                     **serializer.validated_data)  # fmt: skip
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


router = SimpleRouter()
router.register("clouddb/clusters", CloudDbClusterViewSet, basename="clouddbcluster")
urlpatterns = router.urls
