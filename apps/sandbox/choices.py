from django.db import models


class SandboxOrderStatus(models.TextChoices):
    PLACED = "placed", "Placed"
    SHIPPED = "shipped", "Shipped"
    DELIVERED = "delivered", "Delivered"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"
