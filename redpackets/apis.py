"""Thin REST endpoints: groups, sending, viewing and claiming packets."""

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config import schema
from config.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidPin,
    NotFound,
    NotRecipient,
    PacketExhausted,
    PacketExpired,
    PassphraseLocked,
    PermissionDenied,
    PinLocked,
    PinNotSet,
    WrongPassphrase,
)
from config.fields import StrictCharField, StrictIntegerField, StrictUUIDField
from config.pagination import NewestFirstCursorPagination
from config.replicas import ReadsFromReplica
from events.models import EventType
from events.schema import event_data
from redpackets import event_payloads, selectors, services
from redpackets.models import PacketKind, PacketStatus
from wallets.idempotency import idempotency_key, run_idempotent
from wallets.services import pin_require_set, pin_verify


@extend_schema_field(OpenApiTypes.STR)
class UsernameField(serializers.SlugRelatedField):
    """A related user as their username (typed for the schema: these serializers have no model)."""

    def __init__(self, **kwargs):
        super().__init__(slug_field="username", **kwargs)


@extend_schema_serializer(component_name="Group")
class GroupOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    owner = serializers.CharField(source="owner.username")
    members = UsernameField(many=True, read_only=True)
    created_at = serializers.DateTimeField()


class ClaimSerializer(serializers.Serializer):
    user = serializers.CharField()
    amount = serializers.IntegerField()
    claimed_at = serializers.DateTimeField()
    best_luck = serializers.BooleanField()
    share_index = serializers.IntegerField(
        allow_null=True, min_value=0,
        help_text="v1.1: the number of the share this claim took (shares[share_index] of the proof); "
        "null until the proof is published.",
    )


@extend_schema_serializer(component_name="SplitProof")
class SplitProofSerializer(serializers.Serializer):
    algorithm = serializers.ChoiceField(choices=["rp-split-v1"])
    seed = serializers.RegexField(r"^[0-9a-f]{64}$", help_text="The 32-byte seed, as 64 lowercase hex digits.")
    cap = serializers.IntegerField(min_value=1, help_text="The per-share cap in force at send.")
    shares = serializers.ListField(child=serializers.IntegerField(min_value=1), help_text="Share 0, 1, ... in order.")


class MyClaimSerializer(serializers.Serializer):
    amount = serializers.IntegerField()
    claimed_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="Packet")
class PacketOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="packet.id")
    group = serializers.UUIDField(source="packet.group_id")
    sender = serializers.CharField(source="packet.sender.username")
    recipient = serializers.CharField(source="packet.recipient.username", allow_null=True, default=None)
    kind = serializers.ChoiceField(source="packet.kind", choices=PacketKind.choices)
    greeting = serializers.CharField(source="packet.greeting")
    currency = serializers.CharField(source="packet.currency")
    total_amount = serializers.IntegerField(source="packet.total_amount")
    share_count = serializers.IntegerField(source="packet.share_count")
    claimed_count = serializers.IntegerField()
    claimed_amount = serializers.IntegerField()
    remaining_amount = serializers.IntegerField(help_text="Still claimable; 0 once finished or expired.")
    refunded_amount = serializers.IntegerField(source="packet.refunded_amount")
    status = serializers.ChoiceField(choices=PacketStatus.choices)
    created_at = serializers.DateTimeField(source="packet.created_at")
    expires_at = serializers.DateTimeField(source="packet.expires_at")
    finished_at = serializers.DateTimeField(allow_null=True)
    claims = ClaimSerializer(many=True)
    my_claim = MyClaimSerializer(allow_null=True)
    # v1.1
    commitment = serializers.RegexField(
        r"^sha256:[0-9a-f]{64}$", allow_null=True,
        help_text="v1.1, random packets (null for fixed): SHA-256 over the packet's terms and its split's seed, "
        "fixed at send; recompute it from the proof (docs/verifiable-split.md).",
    )
    proof = SplitProofSerializer(
        allow_null=True,
        help_text="v1.1: the seed and every share of a random packet, once it is finished or expired; null before.",
    )
    has_passphrase = serializers.BooleanField(help_text="v1.1: claims must carry the packet's passphrase.")
    hint = serializers.CharField(source="packet.hint", help_text='v1.1: the sender\'s clue to the passphrase; "" when none.')


# --- What the events carry (redpackets.event_payloads renders them) ------------------------


@event_data(EventType.PACKET_SENT)
@extend_schema_serializer(component_name="PacketSentEventData")
class PacketSentEventDataSerializer(serializers.Serializer):
    packet = PacketOutputSerializer(help_text="The packet as GET /packets/{id} shows it, with my_claim null.")


class EventClaimSerializer(serializers.Serializer):
    user = serializers.CharField()
    amount = serializers.IntegerField()
    claimed_at = serializers.DateTimeField()


@event_data(EventType.PACKET_CLAIMED)
@extend_schema_serializer(component_name="PacketClaimedEventData")
class PacketClaimedEventDataSerializer(serializers.Serializer):
    packet = serializers.CharField(help_text="The packet's id.")
    group = serializers.CharField(help_text="The group's id.")
    claim = EventClaimSerializer()


@event_data(EventType.PACKET_FINISHED)
@extend_schema_serializer(component_name="PacketFinishedEventData")
class PacketFinishedEventDataSerializer(serializers.Serializer):
    packet = PacketOutputSerializer(help_text="The packet as it stands once every share is claimed: claims, best_luck, proof.")


@event_data(EventType.PACKET_EXPIRED)
@extend_schema_serializer(component_name="PacketExpiredEventData")
class PacketExpiredEventDataSerializer(serializers.Serializer):
    packet = PacketOutputSerializer(help_text="The packet as it stands once its refund is posted: refunded_amount, proof.")


@event_data(EventType.GROUP_MEMBER_ADDED)
@extend_schema_serializer(component_name="GroupMemberAddedEventData")
class GroupMemberAddedEventDataSerializer(serializers.Serializer):
    group = serializers.CharField(help_text="The group's id.")
    user = serializers.CharField(help_text="The new member's username.")


class GroupsApi(ListAPIView):
    """The caller's groups (GET, newest first) and new groups (POST)."""

    pagination_class = NewestFirstCursorPagination
    serializer_class = GroupOutputSerializer

    def get_queryset(self):
        return selectors.groups_of_member(viewer=self.request.user)

    @extend_schema(
        operation_id="groups_list",
        summary="Your groups",
        tags=["groups"],
        description="The groups the caller is a member of, newest first.",
        responses={200: GroupOutputSerializer(many=True), **schema.errors(*schema.LIST_ERRORS)},
    )
    def get(self, request):
        return super().get(request)

    @extend_schema_serializer(component_name="GroupCreate")
    class InputSerializer(serializers.Serializer):
        # Not all blanks. The set is spelled out: Python's \s and the published pattern's ECMA-262 \s differ.
        name = StrictCharField(
            max_length=100, validators=[RegexValidator(r"[^\t\n\v\f\r ]", "A name needs more than blanks.")]
        )
        members = serializers.ListField(child=StrictCharField(max_length=150), max_length=500, default=list)

    @extend_schema(
        operation_id="groups_create",
        summary="Create a group",
        tags=["groups"],
        description="Create a group mirroring a chat group; the caller is its owner and a member.",
        request=InputSerializer,
        examples=[OpenApiExample("A family group", request_only=True, value={"name": "Family", "members": ["bob", "carol"]})],
        responses={201: GroupOutputSerializer, **schema.errors(schema.VALIDATION, schema.UNAUTHENTICATED)},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        group = services.group_create(
            owner=request.user, name=serializer.validated_data["name"], member_usernames=serializer.validated_data["members"]
        )
        group = selectors.group_for_member(group_id=group.id, viewer=request.user)
        return Response(GroupOutputSerializer(group).data, status=status.HTTP_201_CREATED)


class GroupDetailApi(APIView):
    @extend_schema(
        operation_id="groups_retrieve",
        summary="A group",
        description="Members only: anyone else gets 404 `not_found`, as for a group that does not exist.",
        tags=["groups"],
        responses={200: GroupOutputSerializer, **schema.errors(schema.UNAUTHENTICATED, NotFound)},
    )
    def get(self, request, group_id):
        group = selectors.group_for_member(group_id=group_id, viewer=request.user)
        return Response(GroupOutputSerializer(group).data)


class GroupMemberAddApi(APIView):
    @extend_schema_serializer(component_name="GroupMemberAdd")
    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=150)

    @extend_schema(
        operation_id="groups_members_add",
        summary="Add a member to a group",
        tags=["groups"],
        request=InputSerializer,
        examples=[OpenApiExample("Add a registered user", request_only=True, value={"username": "dora"})],
        responses={
            201: GroupOutputSerializer,
            200: GroupOutputSerializer,
            **schema.errors(schema.VALIDATION, schema.UNAUTHENTICATED, PermissionDenied, NotFound),
        },
        description="Owner only. 201 when the user joins, 200 when they were a member already.",
    )
    def post(self, request, group_id):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.group_add_member(group_id=group_id, actor=request.user, **serializer.validated_data)
        group = selectors.group_for_member(group_id=group_id, viewer=request.user)
        return Response(GroupOutputSerializer(group).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PacketViewsMixin:
    """Lists of packets are paginated Packet rows mapped through the packet view."""

    pagination_class = NewestFirstCursorPagination
    serializer_class = PacketOutputSerializer

    def get_serializer(self, page, many=False, **kwargs):
        views = [selectors.packet_view(p, viewer=self.request.user) for p in page]
        return PacketOutputSerializer(views, many=True)


class GroupPacketListApi(ReadsFromReplica, PacketViewsMixin, ListAPIView):
    def get_queryset(self):
        return selectors.group_packets(group_id=self.kwargs["group_id"], viewer=self.request.user)

    @extend_schema(
        operation_id="groups_packets_list",
        summary="A group's packets",
        tags=["groups"],
        description="The group's packets, newest first (members only).",
        responses={200: PacketOutputSerializer(many=True), **schema.errors(*schema.LIST_ERRORS)},
    )
    def get(self, request, group_id):
        return super().get(request, group_id)


class PacketSendApi(APIView):
    throttle_scope = "money"

    @extend_schema_serializer(component_name="PacketSend")
    class InputSerializer(serializers.Serializer):
        group = StrictUUIDField()
        kind = serializers.ChoiceField(choices=PacketKind.choices)
        share_count = StrictIntegerField(min_value=1)
        total_amount = StrictIntegerField(min_value=1, required=False)
        share_amount = StrictIntegerField(min_value=1, required=False)
        greeting = StrictCharField(max_length=100, required=False, allow_blank=True, default="")
        recipient = StrictCharField(
            max_length=150, required=False, allow_null=True, default=None,
            help_text="Username: an exclusive packet for one member (share_count must be 1).",
        )
        passphrase = StrictCharField(
            max_length=100, required=False,
            help_text="v1.1: members must answer it to claim; 1 to 32 characters after trimming surrounding "
            "blanks, compared after Unicode NFKC normalisation and case folding. Never shown again.",
        )
        hint = StrictCharField(
            max_length=100, required=False, allow_blank=True, default="",
            help_text="v1.1: a question or clue shown to members (needs a passphrase).",
        )
        # Required, as in the contract; any string is a try, so a malformed PIN counts as a wrong one.
        pin = StrictCharField(max_length=64, help_text="The sender's 6-digit payment PIN.")

        def get_fields(self):
            # The limits are settings, read per request: the checks here and the schema's maxima follow them.
            fields = super().get_fields()
            shares, cap = settings.REDPACKET_MAX_SHARES, settings.REDPACKET_MAX_SHARE
            fields["share_count"] = StrictIntegerField(
                min_value=1, max_value=shares,
                help_text=f"1 to the group's member count, and at most {shares} (REDPACKET_MAX_SHARES).",
            )
            fields["total_amount"] = StrictIntegerField(
                min_value=1, max_value=shares * cap, required=False,
                help_text=(
                    f"Random packets: the whole amount, share_count to share_count × {cap} (REDPACKET_MAX_SHARE). "
                    "A fixed packet may repeat it as share_amount × share_count."
                ),
            )
            fields["share_amount"] = StrictIntegerField(
                min_value=1, max_value=cap, required=False,
                help_text=f"Fixed packets only: each share's amount, 1 to {cap} (REDPACKET_MAX_SHARE).",
            )
            return fields

        def validate(self, attrs):
            if attrs["kind"] == PacketKind.RANDOM:
                if "total_amount" not in attrs:
                    raise serializers.ValidationError({"total_amount": ["A random packet needs total_amount."]})
                if "share_amount" in attrs:
                    raise serializers.ValidationError({"share_amount": ["Only fixed packets take share_amount."]})
            else:
                if "share_amount" not in attrs:
                    raise serializers.ValidationError({"share_amount": ["A fixed packet needs share_amount."]})
                total = attrs.get("total_amount")
                if total is not None and total != attrs["share_amount"] * attrs["share_count"]:
                    raise serializers.ValidationError(
                        {"total_amount": ["For a fixed packet, total_amount is share_amount × share_count."]}
                    )
            return attrs

    # The body of one kind of packet, as the schema shows it; InputSerializer validates both kinds.
    class _OneKindInputSerializer(InputSerializer):
        kind_value: str
        dropped_fields: tuple[str, ...] = ()
        required_fields: tuple[str, ...] = ()

        def get_fields(self):
            fields = super().get_fields()
            fields["kind"] = serializers.ChoiceField(choices=[self.kind_value])
            for name in self.dropped_fields:
                del fields[name]
            for name in self.required_fields:
                fields[name].required = True
            return fields

    @extend_schema_serializer(component_name="RandomPacketSend")
    class RandomInputSerializer(_OneKindInputSerializer):
        """A random packet: `total_amount` is split into `share_count` shares at random (no `share_amount`)."""

        kind_value, dropped_fields, required_fields = PacketKind.RANDOM.value, ("share_amount",), ("total_amount",)

    @extend_schema_serializer(component_name="FixedPacketSend")
    class FixedInputSerializer(_OneKindInputSerializer):
        """A fixed packet: `share_count` shares of `share_amount` each."""

        kind_value, required_fields = PacketKind.FIXED.value, ("share_amount",)

    @extend_schema(
        operation_id="packets_create",
        summary="Send a packet",
        tags=["packets"],
        description=(
            "Fund a packet for a group: the total leaves the sender's wallet at once. "
            "A sender who has not set a payment PIN gets 403 `pin_not_set` before the body is checked; "
            "a wrong PIN counts towards the lock (5 within 15 minutes)."
        ),
        parameters=[schema.IDEMPOTENCY_KEY],
        request=PolymorphicProxySerializer(
            component_name="PacketSend",
            serializers={PacketKind.RANDOM.value: RandomInputSerializer, PacketKind.FIXED.value: FixedInputSerializer},
            resource_type_field_name="kind",
        ),
        examples=[
            OpenApiExample("Random packet", request_only=True, value={
                "group": schema.EXAMPLE_GROUP_ID, "kind": "random", "share_count": 3, "total_amount": 888,
                "greeting": "恭喜发财", "pin": schema.EXAMPLE_PIN,
            }),
            OpenApiExample("Fixed packet", request_only=True, value={
                "group": schema.EXAMPLE_GROUP_ID, "kind": "fixed", "share_count": 3, "share_amount": 100,
                "greeting": "Lunch is on me", "pin": schema.EXAMPLE_PIN,
            }),
            OpenApiExample("Random packet with a passphrase", request_only=True, value={
                "group": schema.EXAMPLE_GROUP_ID, "kind": "random", "share_count": 3, "total_amount": 666,
                "greeting": "Answer to open", "passphrase": "恭喜发财", "hint": "What do we say at new year?",
                "pin": schema.EXAMPLE_PIN,
            }),
            OpenApiExample("Exclusive packet for one member", request_only=True, value={
                "group": schema.EXAMPLE_GROUP_ID, "kind": "random", "share_count": 1, "total_amount": 520,
                "recipient": "bob", "pin": schema.EXAMPLE_PIN,
            }),
        ],
        responses={
            201: PacketOutputSerializer,
            **schema.errors(
                schema.VALIDATION, schema.UNAUTHENTICATED, PinNotSet, InvalidPin, NotFound,
                InsufficientFunds, IdempotencyConflict, PinLocked, schema.THROTTLED,
            ),
        },
    )
    def post(self, request):
        pin_read = pin_require_set(user=request.user)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        idempotency_key(request)  # a malformed key is refused before the PIN try is counted
        pin_verify(user=request.user, pin=data.pop("pin"), read=pin_read)

        def execute():
            packet = services.packet_send(
                sender=request.user,
                group_id=data["group"],
                kind=data["kind"],
                share_count=data["share_count"],
                total_amount=data.get("total_amount"),
                share_amount=data.get("share_amount"),
                greeting=data["greeting"],
                recipient_username=data["recipient"],
                passphrase=data.get("passphrase"),
                hint=data["hint"],
            )
            return status.HTTP_201_CREATED, event_payloads.packet_sent_rendered(packet)

        status_code, body = run_idempotent(request, execute)
        return Response(body, status=status_code)


class PacketDetailApi(ReadsFromReplica, APIView):
    @extend_schema(
        operation_id="packets_retrieve",
        summary="A packet",
        description="Members of the packet's group only (others get 404). Amounts of unclaimed shares are never shown.",
        tags=["packets"],
        responses={200: PacketOutputSerializer, **schema.errors(schema.UNAUTHENTICATED, NotFound)},
    )
    def get(self, request, packet_id):
        view = selectors.packet_detail(packet_id=packet_id, viewer=request.user)
        return Response(PacketOutputSerializer(view).data)


class PacketClaimApi(APIView):
    throttle_scope = "claims"

    @extend_schema_serializer(component_name="PacketClaim")
    class OutputSerializer(serializers.Serializer):
        packet = serializers.UUIDField(source="packet_id")
        amount = serializers.IntegerField()
        claimed_at = serializers.DateTimeField()

    @extend_schema_serializer(component_name="PacketClaim")
    class InputSerializer(serializers.Serializer):
        passphrase = StrictCharField(
            max_length=100, required=False, allow_blank=True,
            help_text="v1.1: the answer, for a packet with has_passphrase (ignored otherwise).",
        )

    @extend_schema(
        operation_id="packets_claim",
        summary="Claim a packet",
        tags=["packets"],
        request=InputSerializer,
        examples=[
            OpenApiExample("Passphrase packet", request_only=True, value={"passphrase": "恭喜发财"}),
            OpenApiExample("Packet without a passphrase", request_only=True, value={}),
        ],
        description=(
            "201 with the new claim; 200 with the same body when the caller had claimed already. "
            "A packet with a passphrase takes `{\"passphrase\": ...}`: missing or wrong is 403 `wrong_passphrase` "
            "and pays nothing; the 5th wrong try locks the caller out of the packet (423 `passphrase_locked` "
            "from then on, the right passphrase included)."
        ),
        responses={
            201: OutputSerializer,
            200: OutputSerializer,
            **schema.errors(
                schema.VALIDATION, schema.UNAUTHENTICATED, NotFound, NotRecipient, WrongPassphrase, PacketExhausted,
                PacketExpired, PassphraseLocked, schema.THROTTLED,
            ),
        },
    )
    def post(self, request, packet_id):
        passphrase = None
        # Most claims have no body (or {}): nothing to validate, and building the serializer costs more.
        if request.data != {}:
            serializer = self.InputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            passphrase = serializer.validated_data.get("passphrase")
        claim = services.packet_claim(packet_id=packet_id, user=request.user, passphrase=passphrase)
        return Response(
            _CLAIM_BODY.to_representation(claim), status=status.HTTP_201_CREATED if claim.created else status.HTTP_200_OK
        )


# The claim's body, rendered by one serializer built once (rendering keeps no state on it): a
# serializer per response deep-copies its fields, four times the rendering itself.
_CLAIM_BODY = PacketClaimApi.OutputSerializer()
