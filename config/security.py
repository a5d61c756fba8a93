"""Security headers Django's own middleware does not set (issue 9).

Django's SecurityMiddleware already sends X-Content-Type-Options (SECURE_CONTENT_TYPE_NOSNIFF),
Referrer-Policy (SECURE_REFERRER_POLICY), Cross-Origin-Opener-Policy and, in production,
HSTS; XFrameOptionsMiddleware sends X-Frame-Options: DENY. This adds:

- Content-Security-Policy on HTML pages (the member portal, the finance dashboard, charity
  receipts, the admin): only this origin's scripts, no plugins, no framing, forms post here.
  Inline scripts of our own templates get a per-response nonce (added to their `<script>`
  tags here, so templates need no change); anything a user typed is escaped by the template
  engine and so never becomes a script tag. Inline styles stay allowed (the templates use
  them; a style cannot run code).
- Permissions-Policy: no camera, microphone, geolocation or payment APIs.

`CSP_EXEMPT_PATHS` (default: the GraphQL endpoint, whose optional GraphiQL page loads its
scripts from a CDN and only runs with DEBUG or GRAPHIQL) are left without a policy.
"""

from __future__ import annotations

import re
import secrets

from django.conf import settings

DEFAULT_POLICY = {
    "default-src": "'self'",
    "script-src": "'self' 'nonce-{nonce}'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: https:",
    "font-src": "'self' data:",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*\bnonce=)", re.IGNORECASE)


def content_security_policy(nonce: str) -> str:
    policy = {**DEFAULT_POLICY, **getattr(settings, "CSP_DIRECTIVES", {})}
    return "; ".join(f"{name} {value.format(nonce=nonce)}" for name, value in policy.items())


class SecurityHeadersMiddleware:
    """See the module docstring."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        exempt = getattr(settings, "CSP_EXEMPT_PATHS", ["/graphql/"])
        content_type = response.headers.get("Content-Type", "")
        if (
            content_type.startswith("text/html")
            and not any(request.path.startswith(path) for path in exempt)
            and "Content-Security-Policy" not in response.headers
        ):
            if not response.streaming:
                nonce_attribute = f'<script nonce="{request.csp_nonce}"'.encode()
                response.content = _INLINE_SCRIPT.sub(nonce_attribute, response.content)
                if response.has_header("Content-Length"):
                    response.headers["Content-Length"] = str(len(response.content))
            response.headers["Content-Security-Policy"] = content_security_policy(request.csp_nonce)
        return response
