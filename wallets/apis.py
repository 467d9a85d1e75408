"""Thin REST endpoints: auth, the caller's wallet, topups, PIN and history."""

from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.core import validators as django_validators
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config import schema
from config.errors import BadCredentials, IdempotencyConflict, InvalidPin, PermissionDenied, PinLocked
from config.fields import PinField, StrictCharField, StrictIntegerField
from config.pagination import LedgerCursorPagination
from config.replicas import ReadsFromReplica
from wallets import selectors, services
from wallets.idempotency import run_idempotent
from wallets.models import TransactionKind


def _password_min_length() -> int:
    validators = password_validation.get_default_password_validators()
    return max((getattr(v, "min_length", 0) for v in validators), default=0)


class RegisterApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema_serializer(component_name="Register")
    class InputSerializer(serializers.Serializer):
        username = StrictCharField(
            max_length=150,
            # Spelled out, not \w: Python's \w takes any Unicode letter (lookalike names of other
            # users), the published pattern's ECMA-262 \w only ASCII ones.
            validators=[
                django_validators.RegexValidator(r"^[A-Za-z0-9_.@+-]+\Z", "Use ASCII letters, digits and @ . + - _ only.")
            ],
        )
        password = StrictCharField(max_length=128, write_only=True, style={"input_type": "password"})

        def get_fields(self):
            # The schema states the password validators' minimum length, read when it is built.
            fields = super().get_fields()
            minimum = _password_min_length()
            if minimum:
                fields["password"] = StrictCharField(
                    min_length=minimum, max_length=128, write_only=True, style={"input_type": "password"},
                    error_messages={"min_length": f"This password is too short. It must contain at least {minimum} characters."},
                )
            return fields

        def validate_password(self, value):
            try:
                password_validation.validate_password(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(list(exc.messages)) from None
            return value

    @extend_schema_serializer(component_name="RegisteredUser")
    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField(source="pk")
        username = serializers.CharField()

    @extend_schema(
        operation_id="auth_register",
        summary="Register a user",
        description="Creates a user with an empty wallet in the default currency. The username is unique ignoring case.",
        tags=["auth"],
        auth=[],
        request=InputSerializer,
        examples=[OpenApiExample("New user", request_only=True, value={"username": "dora", "password": "lucky-money-2026"})],
        responses={201: OutputSerializer, **schema.errors(schema.VALIDATION, schema.THROTTLED)},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_register(**serializer.validated_data)
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenApi(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema_serializer(component_name="TokenCredentials")
    class InputSerializer(serializers.Serializer):
        username = StrictCharField(max_length=150)
        password = StrictCharField(max_length=128, write_only=True, style={"input_type": "password"})

    @extend_schema_serializer(component_name="Token")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        expires_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(
        operation_id="auth_token",
        summary="Log in: get a bearer token",
        description="Exchanges a username and password for a bearer token. At most AUTH_TOKENS_PER_USER tokens live at once; a new login revokes the oldest.",
        tags=["auth"],
        auth=[],
        request=InputSerializer,
        examples=[OpenApiExample("Demo user", request_only=True, value={"username": "alice", "password": "redpacket-demo"})],
        responses={200: OutputSerializer, **schema.errors(schema.VALIDATION, BadCredentials, schema.THROTTLED)},
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            raise BadCredentials()
        instance, token = services.auth_token_issue(user=user)
        return Response(self.OutputSerializer({"token": token, "expires_at": instance.expiry}).data)


class LogoutApi(APIView):
    @extend_schema(
        operation_id="auth_logout",
        summary="Log out this token",
        tags=["auth"],
        request=None,
        description="Revokes the token of this request.",
        responses={204: None, **schema.errors(schema.UNAUTHENTICATED)},
    )
    def post(self, request):
        request.auth.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllApi(APIView):
    @extend_schema(
        operation_id="auth_logout_all",
        summary="Log out every token",
        tags=["auth"],
        request=None,
        description="Revokes every token of the caller.",
        responses={204: None, **schema.errors(schema.UNAUTHENTICATED)},
    )
    def post(self, request):
        request.user.auth_token_set.all().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WalletApi(APIView):
    @extend_schema_serializer(component_name="Wallet")
    class OutputSerializer(serializers.Serializer):
        balance = serializers.IntegerField(help_text="Minor units of `currency`.")
        currency = serializers.CharField()

    @extend_schema(
        operation_id="wallet_retrieve",
        summary="Your wallet's balance",
        description="The caller's balance in minor units of its currency (`1234` = 12.34 CNY).",
        tags=["wallet"],
        responses={200: OutputSerializer, **schema.errors(schema.UNAUTHENTICATED)},
    )
    def get(self, request):
        wallet = services.wallet_get_or_create(user=request.user)
        return Response(self.OutputSerializer(wallet).data)


class PinApi(APIView):
    @extend_schema_serializer(component_name="PinChange")
    class InputSerializer(serializers.Serializer):
        pin = PinField()
        current_pin = PinField(required=False, help_text="Required to change an existing PIN.")

    @extend_schema(
        operation_id="wallet_pin_set",
        summary="Set or change your payment PIN",
        description="`pin` is 6 digits. Changing an existing PIN needs `current_pin`; a wrong one counts towards the lock like a wrong PIN on a send.",
        tags=["wallet"],
        request=InputSerializer,
        examples=[
            OpenApiExample("First PIN", request_only=True, value={"pin": "123456"}),
            OpenApiExample("Change the PIN", request_only=True, value={"pin": "654321", "current_pin": "123456"}),
        ],
        responses={204: None, **schema.errors(schema.VALIDATION, schema.UNAUTHENTICATED, InvalidPin, PinLocked)},
    )
    def put(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.pin_set(user=request.user, **serializer.validated_data)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TopupApi(APIView):
    throttle_scope = "money"

    @extend_schema_serializer(component_name="Topup")
    class InputSerializer(serializers.Serializer):
        amount = StrictIntegerField(min_value=1, help_text="Minor units; at most SANDBOX_TOPUP_MAX.")

        def get_fields(self):
            # SANDBOX_TOPUP_MAX is read per request, so the limit (and the schema's maximum) follow the setting.
            fields = super().get_fields()
            limit = settings.SANDBOX_TOPUP_MAX
            fields["amount"] = StrictIntegerField(
                min_value=1, max_value=limit, help_text=f"Minor units; at most {limit} (SANDBOX_TOPUP_MAX).",
                error_messages={"max_value": f"A sandbox topup is at most {limit}."},
            )
            return fields

    @extend_schema_serializer(component_name="TopupResult")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        amount = serializers.IntegerField()
        balance = serializers.IntegerField()

    @extend_schema(
        operation_id="wallet_topup",
        summary="Top up your wallet (sandbox)",
        description="A sandbox stand-in for a payment provider: allowed while the SANDBOX_TOPUPS setting is on, otherwise 403 `permission_denied`.",
        tags=["wallet"],
        parameters=[schema.IDEMPOTENCY_KEY],
        request=InputSerializer,
        examples=[OpenApiExample("100.00 CNY", request_only=True, value={"amount": 10000})],
        responses={
            201: OutputSerializer,
            **schema.errors(schema.VALIDATION, schema.UNAUTHENTICATED, PermissionDenied, IdempotencyConflict, schema.THROTTLED),
        },
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)

        def execute():
            topup = services.wallet_topup(user=request.user, **serializer.validated_data)
            entry = topup.entries.get(account__user=request.user)
            body = self.OutputSerializer({"id": topup.id, "amount": entry.amount, "balance": entry.balance_after}).data
            return status.HTTP_201_CREATED, body

        status_code, body = run_idempotent(request, execute)
        return Response(body, status=status_code)


class TransactionListApi(ReadsFromReplica, ListAPIView):
    pagination_class = LedgerCursorPagination

    @extend_schema_serializer(component_name="WalletTransaction")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField(source="transaction_id")
        kind = serializers.ChoiceField(source="transaction.kind", choices=TransactionKind.choices)
        amount = serializers.IntegerField(help_text="Signed: negative leaves the wallet.")
        balance_after = serializers.IntegerField()
        created_at = serializers.DateTimeField(source="transaction.created_at")
        packet = serializers.UUIDField(source="transaction.packet_id", allow_null=True)
        memo = serializers.CharField(source="transaction.memo")

    serializer_class = OutputSerializer

    def get_queryset(self):
        return selectors.wallet_history(user=self.request.user)

    @extend_schema(
        operation_id="wallet_transactions_list",
        summary="Your wallet's history",
        tags=["wallet"],
        description="The caller's ledger entries, newest first.",
        responses={200: OutputSerializer(many=True), **schema.errors(*schema.LIST_ERRORS)},
    )
    def get(self, request):
        return super().get(request)
