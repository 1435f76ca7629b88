"""API keys: a bearer secret per person and purpose.

Only a SHA-256 digest of the key is stored. The key is 43 random URL-safe
characters (256 bits), so a fast hash is enough: there is nothing to
brute-force that a slow hash would protect. The first characters are kept
in clear (`prefix`) so a person can tell their keys apart.
"""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "sk-attune-"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 6
# Writing last_used_at on every request would serialize API calls on SQLite's
# write lock; a minute's precision is all the settings page shows.
LAST_USED_PRECISION_SECONDS = 60


def digest(raw_key):
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


class ApiKey(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'CI' or 'laptop'.")
    prefix = models.CharField(max_length=32, help_text="The first characters of the key, shown to tell keys apart.")
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, owner, name):
        """Create a key; return (ApiKey, the key in clear, which is never stored)."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls.objects.create(owner=owner, name=name[:100] or "unnamed", prefix=raw[:SHOWN_PREFIX_LENGTH],
                                 hashed_key=digest(raw))
        return key, raw

    @classmethod
    def authenticate(cls, raw):
        """The live key matching `raw`, or None; records when it was used."""
        if not raw:
            return None
        key = (cls.objects.select_related("owner").filter(hashed_key=digest(raw), revoked_at__isnull=True)
               .first())
        if key is None or not key.owner.is_active:
            return None
        now = timezone.now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= LAST_USED_PRECISION_SECONDS:
            key.last_used_at = now
            key.save(update_fields=["last_used_at"])
        return key

    @property
    def is_active(self):
        return self.revoked_at is None

    def revoke(self):
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
