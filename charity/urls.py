from django.urls import path

from . import views

app_name = "charity"

urlpatterns = [
    path("receipts/<str:receipt_number>/", views.receipt, name="receipt"),
    path("statements/<int:year>/", views.statement, name="statement"),
    path("donations/", views.donations, name="donations"),
    path("impact/", views.impact, name="impact"),
]
