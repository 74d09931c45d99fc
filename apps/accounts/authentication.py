from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .services import user_for_api_token


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer cpt_…`` — the request acts as the token's user."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <token>'.")
        try:
            raw_token = header[1].decode()
        except UnicodeError as error:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from error
        user = user_for_api_token(raw_token)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API token.")
        return user, None

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token created by an administrator."}
