"""django-allauth adapters: who may sign up, and what single sign-on does to roles.

OpenID Connect sign-in re-derives the user's identity-provider memberships from the
groups claim on every login. Where the hooks run (django-allauth 65.x):

- a new user: ``save_user`` is called once the user and the social account are stored
  (``socialaccount/internal/flows/signup.py``, ``process_signup``; also from the signup
  form when auto-signup is not possible);
- an existing user: ``pre_social_login`` is called after ``sociallogin.lookup()`` has
  loaded the stored user and refreshed ``SocialAccount.extra_data`` with this login's
  claims, before the session is logged in (``socialaccount/internal/flows/login.py``).

The rules (which groups grant which role, what happens to local memberships) live in
``services.sync_memberships_from_idp_groups``; this module only reads claims.
"""

from collections.abc import Mapping
from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base.constants import AuthProcess
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .models import User
from .services import sync_memberships_from_idp_groups


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # Local accounts are created by administrators (admin or `manage.py`), never by
        # self-service sign-up: a governance tool's users are provisioned.
        return False


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        # People the identity provider vouches for get an account on first sign-in;
        # what they may do still comes only from the groups it claims for them.
        return True

    def populate_user(self, request, sociallogin, data):
        # allauth fills username, email, first and last name of a new user; the display
        # name is ours.
        user = super().populate_user(request, sociallogin, data)
        if isinstance(data.get("name"), str):
            user.display_name = data["name"][: User._meta.get_field("display_name").max_length]
        return user

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form=form)
        if _is_oidc(sociallogin):
            sync_memberships_from_idp_groups(user=user, groups=groups_from_claims(oidc_claims(sociallogin)))
        return user

    def pre_social_login(self, request, sociallogin) -> None:
        super().pre_social_login(request, sociallogin)
        # New users are handled in save_user, once they exist; connecting an account to
        # someone already signed in is not a sign-in of the account's owner.
        if not _is_oidc(sociallogin) or not sociallogin.is_existing:
            return
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            return
        claims = oidc_claims(sociallogin)
        _update_profile(sociallogin.user, claims)
        sync_memberships_from_idp_groups(user=sociallogin.user, groups=groups_from_claims(claims))


def _is_oidc(sociallogin) -> bool:
    return getattr(sociallogin.provider, "id", None) == OpenIDConnectProvider.id


def oidc_claims(sociallogin) -> dict[str, Any]:
    """This sign-in's claims.

    allauth's openid_connect provider stores ``{"userinfo": {...}, "id_token": {...}}`` in
    ``SocialAccount.extra_data`` (``OpenIDConnectOAuth2Adapter.complete_login``), either
    part possibly missing. Userinfo wins where both carry a claim, as in allauth's own
    field mapping; a claim only in the ID token (Entra ID puts groups there) still counts.
    """
    data = sociallogin.account.extra_data or {}
    if "userinfo" in data or "id_token" in data:
        id_token = data.get("id_token") or {}
        userinfo = data.get("userinfo") or {}
        return {**id_token, **userinfo}
    return dict(data)  # Accounts stored before allauth 65.11 hold the claims flat.


def groups_from_claims(claims: Mapping[str, Any]) -> list[str]:
    """The groups claim as a list: a list of strings, one string, or nothing."""
    value = claims.get(getattr(settings, "OIDC_GROUPS_CLAIM", "") or "groups")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [group for group in value if isinstance(group, str)]
    return []


def _update_profile(user: User, claims: Mapping[str, Any]) -> None:
    """Refresh an existing user's name and email from the identity provider.

    allauth copies these only into a new user. Claims that are absent leave the field
    alone; an email address another account already uses is not taken over.
    """
    name = claims.get("name") or ""
    given, _, family = name.partition(" ")
    wanted = {
        "first_name": claims.get("given_name") or given,
        "last_name": claims.get("family_name") or family,
        "display_name": name,
    }
    email = _valid_email(claims.get("email"))
    if email and not _email_taken(email, user):
        wanted["email"] = email

    changed = []
    for field, value in wanted.items():
        max_length = User._meta.get_field(field).max_length
        value = value[:max_length] if isinstance(value, str) else ""
        if value and getattr(user, field) != value:
            setattr(user, field, value)
            changed.append(field)
    if changed:
        user.save(update_fields=changed)


def _valid_email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        validate_email(value)
    except ValidationError:
        return None
    return value


def _email_taken(email: str, user: User) -> bool:
    return (
        User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists()
        or EmailAddress.objects.filter(email__iexact=email).exclude(user=user).exists()
    )
