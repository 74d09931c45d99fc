"""Single sign-on end to end: a browser session signs in through a real OpenID Connect
provider (oidc-provider-mock on loopback) and the groups it claims become roles."""

import re
from importlib import import_module

import pytest
import requests
from allauth.socialaccount.models import SocialAccount
from django.conf import settings as django_settings
from django.urls import reverse

from apps.accounts.choices import MembershipSource, RoleKind
from apps.accounts.models import Membership, Role, User
from apps.accounts.services import create_tenant

PROVIDER_ID = "test-idp"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def oidc_settings(settings, oidc_provider):
    """Point allauth at the running provider. settings.py builds SOCIALACCOUNT_PROVIDERS
    from the environment at import time, so the test sets the finished structure."""
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": PROVIDER_ID,
                    "name": "Test identity provider",
                    "client_id": "control-plane",
                    "secret": "control-plane-secret",
                    "settings": {
                        "server_url": oidc_provider.url,
                        "scope": ["openid", "profile", "email", "groups"],
                        "token_auth_method": "client_secret_basic",
                    },
                }
            ],
        }
    }
    settings.OIDC_GROUPS_CLAIM = "groups"
    return settings


@pytest.fixture
def acme(db):
    return create_tenant(name="Acme", slug="acme")


def sign_in(live_server, oidc_provider, sub: str) -> User:
    """Drive the browser flow with one cookie jar and return the signed-in user."""
    browser = requests.Session()
    login_url = live_server.url + reverse("openid_connect_login", kwargs={"provider_id": PROVIDER_ID})

    # allauth starts the flow only on POST (SOCIALACCOUNT_LOGIN_ON_GET is off).
    page = browser.get(login_url, timeout=10)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert csrf, "no CSRF token on allauth's sign-in page"
    to_provider = browser.post(
        login_url, data={"csrfmiddlewaretoken": csrf.group(1)}, allow_redirects=False, timeout=10
    )
    assert to_provider.status_code == 302, to_provider.text
    authorize_url = to_provider.headers["Location"]
    assert authorize_url.startswith(f"{oidc_provider.url}/oauth2/authorize?")

    # The provider's consent page: authorise as ``sub``.
    consent = browser.get(authorize_url, timeout=10)
    assert consent.status_code == 200, consent.text
    assert 'name="sub"' in consent.text
    to_callback = browser.post(authorize_url, data={"sub": sub}, allow_redirects=False, timeout=10)
    assert to_callback.status_code == 302, to_callback.text
    callback_url = to_callback.headers["Location"]
    callback_path = reverse("openid_connect_callback", kwargs={"provider_id": PROVIDER_ID})
    assert callback_url.startswith(f"{live_server.url}{callback_path}?")
    assert "code=" in callback_url

    # Django exchanges the code, reads the claims and signs the session in.
    done = browser.get(callback_url, allow_redirects=False, timeout=10)
    assert done.status_code == 302, done.text
    assert done.headers["Location"] == django_settings.LOGIN_REDIRECT_URL

    user = SocialAccount.objects.get(provider=PROVIDER_ID, uid=sub).user
    session_store = import_module(django_settings.SESSION_ENGINE).SessionStore
    session = session_store(session_key=browser.cookies[django_settings.SESSION_COOKIE_NAME])
    assert session.get("_auth_user_id") == str(user.pk)
    # The front page requires a login: it answers, rather than redirecting to sign-in.
    home = browser.get(f"{live_server.url}/", allow_redirects=False, timeout=10)
    assert home.status_code == 200
    user.refresh_from_db()
    return user


def memberships(user: User) -> set[tuple[str, str, str]]:
    return {
        (m.role.tenant.slug, m.role.kind, m.source)
        for m in Membership.objects.filter(user=user).select_related("role__tenant")
    }


def django_groups(user: User) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_first_sign_in_creates_user_with_claimed_roles(live_server, oidc_provider, oidc_settings, acme):
    oidc_provider.set_user(
        "ada",
        {
            "email": "ada@example.com",
            "email_verified": True,
            "preferred_username": "ada",
            "name": "Ada Lovelace",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "groups": ["acme:support_lead", "unknown:group"],
        },
    )

    user = sign_in(live_server, oidc_provider, "ada")

    assert memberships(user) == {("acme", RoleKind.SUPPORT_LEAD, MembershipSource.IDENTITY_PROVIDER)}
    assert user.is_staff
    assert not user.is_superuser
    assert django_groups(user) == {"role:support_lead"}
    assert (user.email, user.first_name, user.last_name) == ("ada@example.com", "Ada", "Lovelace")
    assert user.display_name == "Ada Lovelace"
    assert not user.has_usable_password()


def test_later_sign_in_replaces_idp_roles_and_keeps_local_ones(live_server, oidc_provider, oidc_settings, acme):
    oidc_provider.set_user(
        "grace",
        {"email": "grace@example.com", "name": "Grace Hopper", "groups": ["acme:support_lead"]},
    )
    user = sign_in(live_server, oidc_provider, "grace")
    assert memberships(user) == {("acme", RoleKind.SUPPORT_LEAD, MembershipSource.IDENTITY_PROVIDER)}
    Membership.objects.create(
        user=user, role=Role.objects.get(tenant=acme, kind=RoleKind.COMPLIANCE), source=MembershipSource.LOCAL
    )

    oidc_provider.set_user(
        "grace",
        {
            "email": "grace.hopper@example.com",
            "given_name": "Grace",
            "family_name": "Murray Hopper",
            "name": "Grace Murray Hopper",
            "groups": ["acme:knowledge_owner"],
        },
    )
    again = sign_in(live_server, oidc_provider, "grace")

    assert again.pk == user.pk
    assert User.objects.count() == 1
    assert memberships(again) == {
        ("acme", RoleKind.KNOWLEDGE_OWNER, MembershipSource.IDENTITY_PROVIDER),
        ("acme", RoleKind.COMPLIANCE, MembershipSource.LOCAL),
    }
    assert django_groups(again) == {"role:knowledge_owner", "role:compliance"}
    assert again.is_staff
    # allauth copies profile claims only into new users; later sign-ins refresh them here.
    assert (again.email, again.first_name, again.last_name) == ("grace.hopper@example.com", "Grace", "Murray Hopper")
    assert again.display_name == "Grace Murray Hopper"


def test_sign_in_without_groups_claim_grants_nothing(live_server, oidc_provider, oidc_settings, acme):
    oidc_provider.set_user("linus", {"email": "linus@example.com"})
    user = sign_in(live_server, oidc_provider, "linus")
    assert memberships(user) == set()
    assert not user.is_staff
    assert django_groups(user) == set()

    # Holding a role, then signing in without the claim, takes the role away again.
    oidc_provider.set_user("linus", {"email": "linus@example.com", "groups": ["acme:admin"]})
    user = sign_in(live_server, oidc_provider, "linus")
    assert memberships(user) == {("acme", RoleKind.ADMIN, MembershipSource.IDENTITY_PROVIDER)}
    assert user.is_staff

    oidc_provider.set_user("linus", {"email": "linus@example.com"})
    user = sign_in(live_server, oidc_provider, "linus")
    assert memberships(user) == set()
    assert not user.is_staff
    assert django_groups(user) == set()


def test_group_of_inactive_tenant_grants_nothing(live_server, oidc_provider, oidc_settings, acme):
    globex = create_tenant(name="Globex", slug="globex")
    globex.is_active = False
    globex.save()
    oidc_provider.set_user(
        "hank", {"email": "hank@example.com", "groups": ["globex:admin", "globex:support_lead", "acme:support_agent"]}
    )

    user = sign_in(live_server, oidc_provider, "hank")

    # Only the active tenant's group counts; support agents are not staff.
    assert memberships(user) == {("acme", RoleKind.SUPPORT_AGENT, MembershipSource.IDENTITY_PROVIDER)}
    assert not user.is_staff
    assert django_groups(user) == {"role:support_agent"}


def test_groups_claim_name_is_configurable_and_may_be_one_string(live_server, oidc_provider, oidc_settings, acme):
    oidc_settings.OIDC_GROUPS_CLAIM = "roles"
    oidc_provider.set_user(
        "margaret",
        {"email": "margaret@example.com", "roles": "acme:security", "groups": ["acme:admin"]},
    )

    user = sign_in(live_server, oidc_provider, "margaret")

    assert memberships(user) == {("acme", RoleKind.SECURITY, MembershipSource.IDENTITY_PROVIDER)}
    assert django_groups(user) == {"role:security"}
