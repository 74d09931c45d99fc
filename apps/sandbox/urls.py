"""Mounted at /sandbox/ only when SANDBOX_ENABLED. The paths have no trailing slash: they
are what the demo's HTTP tools append to their connection's base URL."""

from django.urls import path

from . import views

app_name = "sandbox"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("<slug:tenant_slug>/orders/<str:number>", views.order, name="order"),
    path("<slug:tenant_slug>/customers/<str:customer_id>/notes", views.customer_notes, name="customer-notes"),
    path("<slug:tenant_slug>/customers/<str:customer_id>", views.customer, name="customer"),
    path("<slug:tenant_slug>/refunds", views.refunds, name="refunds"),
    path("<slug:tenant_slug>/emails", views.emails, name="emails"),
]
