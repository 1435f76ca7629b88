"""The Content-Security-Policy header on every response.

Scripts and styles come only from the studio's own static files: no inline
<script>, no event-handler attributes, no style attributes, no eval. The
pages keep their JavaScript in static/js/ and their CSS in static/css/;
data for a script travels in `json_script` blocks, which are not run.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    # 'self' covers the job page's websocket (ws:// or wss:// to the same host) and the compare page's stream.
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def policy_header():
    policy = {**POLICY, **getattr(settings, "CONTENT_SECURITY_POLICY", {})}
    return "; ".join(f"{directive} {sources}" for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    # Both kinds, so the async views (streams, downloads) take no detour through a thread.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = policy_header()
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.header)
        return response

    async def _acall(self, request):
        response = await self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.header)
        return response
