from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Server-rendered pages: member portal (/portal/) and finance dashboard.
    path("", include("web.urls")),
]
