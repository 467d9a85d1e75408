"""Bearer-token authentication in one query per request."""

import binascii
from hmac import compare_digest

from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import knox_settings
from rest_framework.exceptions import AuthenticationFailed


class OneQueryTokenAuthentication(TokenAuthentication):
    """knox's tokens (stored as SHA-512 digests), looked up with their user in one query.

    knox itself selects the tokens sharing the first 15 characters, then on every request
    loads all the user's other tokens to delete the expired ones: two queries. Here the
    digest, knox's primary key, finds the one token; an expired token is refused and
    deleted; the user's other expired tokens are deleted when they next log in
    (`wallets.services.auth_token_issue`), which bounds their number anyway.
    """

    def authenticate_credentials(self, token: bytes):
        try:
            digest = hash_token(token.decode("utf-8"))
        except (UnicodeDecodeError, TypeError, binascii.Error):
            raise AuthenticationFailed("Invalid token.") from None
        auth_token = AuthToken.objects.select_related("user").filter(digest=digest).first()
        # The row was found by this digest; comparing again keeps knox's constant-time check.
        if auth_token is None or not compare_digest(digest, auth_token.digest):
            raise AuthenticationFailed("Invalid token.")
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            raise AuthenticationFailed("Invalid token.")
        if knox_settings.AUTO_REFRESH and auth_token.expiry:
            self.renew_token(auth_token)
        return self.validate_user(auth_token)
