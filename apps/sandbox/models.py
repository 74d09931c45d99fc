"""Pretend business systems for the demo: an order system, CRM notes, payments and an
e-mail outbox, one set per tenant. Nothing here is real: no money moves, no e-mail leaves.
Every model says "sandbox" in its name so nobody mistakes a row for a real one."""

from django.db import models

from apps.accounts.models import Tenant

from .choices import SandboxOrderStatus


class SandboxAccount(models.Model):
    """A tenant's access to its sandbox systems. Only the SHA-256 of the bearer token is
    kept: the token itself lives, encrypted, in the tenant's tool connections."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="sandbox_account")
    token_digest = models.CharField(max_length=64, help_text="SHA-256 (hex) of the bearer token; never the token.")
    created_at = models.DateTimeField(auto_now_add=True)
    token_rotated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "sandbox account"

    def __str__(self) -> str:
        return f"Sandbox account of {self.tenant}"


class SandboxCustomer(models.Model):
    """A customer of the pretend shop. "Deleting" one marks it, so the demo can show what
    the delete tool did; a deleted customer is unknown to every endpoint afterwards."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer_id = models.CharField(max_length=20, help_text="e.g. C-1001")
    name = models.CharField(max_length=200)
    email = models.EmailField()
    region = models.CharField(max_length=16, blank=True)
    segment = models.CharField(max_length=32, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "sandbox customer"
        ordering = ["tenant", "customer_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "customer_id"], name="sandbox_customer_id_unique_in_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.name}"


class SandboxOrder(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    number = models.CharField(max_length=20, help_text="e.g. A-1042")
    customer_id = models.CharField(max_length=20)
    customer_email = models.EmailField()
    items = models.JSONField(default=list, help_text='[{"sku": ..., "name": ..., "quantity": ..., "price": "..."}]')
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, choices=SandboxOrderStatus.choices, default=SandboxOrderStatus.DELIVERED)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox order"
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="sandbox_order_number_unique_in_tenant")
        ]

    def __str__(self) -> str:
        return self.number


class SandboxCrmNote(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer_id = models.CharField(max_length=20)
    text = models.TextField()
    author = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox CRM note"
        ordering = ["-created", "-pk"]
        indexes = [models.Index(fields=["tenant", "customer_id"], name="sandbox_note_customer")]

    def __str__(self) -> str:
        return f"Note on {self.customer_id}"


class SandboxRefund(models.Model):
    """A refund the pretend payment system "issued". ``idempotency_key`` is the caller's
    ``Idempotency-Key`` header: one refund per key and tenant, whatever the retries."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey(SandboxOrder, on_delete=models.CASCADE, related_name="refunds")
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    reason = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox refund"
        ordering = ["-created", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="sandbox_refund_idempotency_key_unique_in_tenant",
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="sandbox_refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Refund of {self.amount} on {self.order}"


class SandboxEmail(models.Model):
    """An e-mail in the sandbox outbox. It is never sent: the outbox is the whole story."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    customer_id = models.CharField(max_length=20)
    to_address = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "sandbox e-mail (outbox, never sent)"
        verbose_name_plural = "sandbox e-mails (outbox, never sent)"
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.subject
