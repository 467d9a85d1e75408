"""Who the client is behind the load balancer: one rule for every feature that asks.

Only a peer listed in TRUSTED_PROXIES (the load balancer, by address or network) is
believed about what it adds to a request: its X-Request-ID (config/logging.py) and, in
X-Forwarded-For, the address it took the request from. From anyone else both headers
are ignored, so a client can neither choose its request id nor pose as another address.

The client's address is read from the right of X-Forwarded-For, where the proxies append:
the first hop that is not itself a trusted proxy. Everything left of it was written by
the client and proves nothing. The admin's login lockout (django-axes,
AXES_CLIENT_IP_CALLABLE) and the API's per-address rate limit (config/throttling.py)
both count by this address.
"""

import ipaddress

from django.conf import settings

FORWARDED_FOR = "HTTP_X_FORWARDED_FOR"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _is_trusted(ip) -> bool:
    return ip is not None and any(ip in network for network in settings.TRUSTED_PROXIES)


def peer_is_trusted_proxy(request) -> bool:
    """The peer that sent this request (REMOTE_ADDR) is one of TRUSTED_PROXIES."""
    return _is_trusted(_address(request.META.get("REMOTE_ADDR", "")))


def client_address(request) -> str:
    """The client's IP address: the peer's, or from a trusted proxy the nearest untrusted X-Forwarded-For hop."""
    peer = request.META.get("REMOTE_ADDR", "")
    if not _is_trusted(_address(peer)):
        return peer
    for hop in reversed(request.META.get(FORWARDED_FOR, "").split(",")):
        ip = _address(hop)
        if ip is None:
            break  # not an address: the trusted hop that passed it on is the last one to believe
        peer = str(ip)
        if not _is_trusted(ip):
            break
    return peer
