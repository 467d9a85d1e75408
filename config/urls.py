from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.errors import envelope
from events import apis as event_apis
from redpackets import apis as packet_apis
from wallets import apis as wallet_apis


def endpoint(route: str, view, name: str) -> list:
    """The contract's paths have no trailing slash; one is tolerated."""
    return [path(route, view, name=name), path(f"{route}/", view)]


@csrf_exempt
def unknown_api_path(request, rest=""):
    # A plain view: no `Allow` header, which would list methods of a resource that does not exist.
    return JsonResponse(envelope("not_found", f"No endpoint at {request.path}."), status=404)


api_v1 = [
    *endpoint("auth/register", wallet_apis.RegisterApi.as_view(), "auth-register"),
    *endpoint("auth/token", wallet_apis.TokenApi.as_view(), "auth-token"),
    *endpoint("auth/logout", wallet_apis.LogoutApi.as_view(), "auth-logout"),
    *endpoint("auth/logout-all", wallet_apis.LogoutAllApi.as_view(), "auth-logout-all"),
    *endpoint("wallet", wallet_apis.WalletApi.as_view(), "wallet"),
    *endpoint("wallet/pin", wallet_apis.PinApi.as_view(), "wallet-pin"),
    *endpoint("wallet/topups", wallet_apis.TopupApi.as_view(), "wallet-topups"),
    *endpoint("wallet/transactions", wallet_apis.TransactionListApi.as_view(), "wallet-transactions"),
    *endpoint("groups", packet_apis.GroupsApi.as_view(), "groups"),
    *endpoint("groups/<uuid:group_id>", packet_apis.GroupDetailApi.as_view(), "group-detail"),
    *endpoint("groups/<uuid:group_id>/members", packet_apis.GroupMemberAddApi.as_view(), "group-members"),
    *endpoint("groups/<uuid:group_id>/packets", packet_apis.GroupPacketListApi.as_view(), "group-packets"),
    *endpoint("packets", packet_apis.PacketSendApi.as_view(), "packets"),
    *endpoint("packets/<uuid:packet_id>", packet_apis.PacketDetailApi.as_view(), "packet-detail"),
    *endpoint("packets/<uuid:packet_id>/claim", packet_apis.PacketClaimApi.as_view(), "packet-claim"),
    *endpoint("events", event_apis.EventFeedApi.as_view(), "events"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
    path("", include("observability.urls")),
    # Unknown API paths answer with the error envelope even when DEBUG is on.
    re_path(r"^api/(?P<rest>.*)$", unknown_api_path),
]

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
