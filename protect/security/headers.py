"""Response headers: a strict CSP and nothing cached that could hold personal data."""
from __future__ import annotations

from flask import Flask, request

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PERMISSIONS = ("accelerometer=(), camera=(), geolocation=(), gyroscope=(), "
               "magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()")


def _secure_headers(response):
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    # Never to another site; within it, because Flask-WTF's CSRF check over https
    # requires a same-origin Referer on every POST.
    h["Referrer-Policy"] = "same-origin"
    h["Permissions-Policy"] = PERMISSIONS
    h["X-Frame-Options"] = "DENY"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.endpoint == "static":
        h["Cache-Control"] = "public, max-age=3600"
    else:
        # Any page may show personal data or reveal who is signed in.
        h["Cache-Control"] = "no-store"
        h["Pragma"] = "no-cache"
    return response


def install(app: Flask) -> None:
    app.after_request(_secure_headers)
