from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.evals.dashboard_views import dashboard
from apps.runtime.health import health

admin.site.site_header = "Agent governance control plane"
admin.site.site_title = "Control plane"
admin.site.index_title = "Govern your agents"

api_v1 = [
    path("", include("apps.agents.api")),
    path("", include("apps.tools.api")),
    path("", include("apps.runtime.api")),
    path("", include("apps.approvals.api")),
    path("", include("apps.handoffs.api")),
    path("", include("apps.evals.api")),
]

urlpatterns = [
    path("", dashboard, name="home"),
    path("health/", health, name="health"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("audit/", include("apps.audit.urls", namespace="audit")),
    path("try/", include("apps.runtime.urls", namespace="runtime")),
    path("approvals/", include("apps.approvals.urls", namespace="approvals")),
    path("handoffs/", include("apps.handoffs.urls", namespace="handoffs")),
    path("evals/", include("apps.evals.urls", namespace="evals")),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("apps.sandbox.urls", namespace="sandbox")))
