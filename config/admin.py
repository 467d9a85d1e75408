"""Admin building blocks shared by the apps."""

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite


class ReadOnlyAdminMixin:
    """Money rows are written by services only; the admin shows them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyTabularInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class OperatorLoginForm(OTPAdminAuthenticationForm):
    """Password and TOTP code in one step: a staff member with a single device
    need not pick it first (django-otp asks for an explicit choice otherwise)."""

    def clean_otp(self, user):
        if user is not None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True))
            if len(devices) == 1:
                self.cleaned_data["otp_device"] = devices[0].persistent_id
        super().clean_otp(user)


class OperatorsAdminSite(OTPAdminSite):
    """The operators' admin site.

    Under settings.ADMIN_REQUIRE_OTP (on in production) it is django-otp's
    OTPAdminSite: staff log in with password and a TOTP code, and a session
    not verified by a device is treated as not staff. Under base settings it is
    the plain admin, so `createsuperuser` and `seed_demo` logins work locally.
    """

    site_header = "Red packets operations"
    site_title = "Red packets operations"
    # The "View site" link pointed at "/", which this service answers with the
    # API's 404 envelope: operators have no site to view.
    site_url = None
    # The app list beside every page took 300 of a 1366 px screen's width from the
    # lists; the index page and the breadcrumbs lead everywhere.
    enable_nav_sidebar = False

    def __init__(self, name: str = "admin"):
        # OTPAdminSite names itself "otpadmin", which would move every admin: URL name.
        super().__init__(name)

    @property
    def login_form(self):
        return OperatorLoginForm if settings.ADMIN_REQUIRE_OTP else AdminAuthenticationForm

    @property
    def login_template(self):
        return OTPAdminSite.login_template if settings.ADMIN_REQUIRE_OTP else None

    def has_permission(self, request) -> bool:
        if settings.ADMIN_REQUIRE_OTP:
            return super().has_permission(request)
        return admin.AdminSite.has_permission(self, request)

    def get_urls(self):
        return [path("dashboard/", self.admin_view(self.dashboard_view), name="dashboard"), *super().get_urls()]

    def dashboard_view(self, request):
        from config.dashboard import dashboard_sections  # its providers import the apps' admin modules

        context = {**self.each_context(request), "title": "Dashboard", "sections": dashboard_sections(),
                   "generated_at": timezone.now()}
        return TemplateResponse(request, "admin/dashboard.html", context)


class AdminLoginAttemptsHandler(AxesDatabaseHandler):
    """django-axes for the admin's login only.

    AXES_ONLY_ADMIN_SITE lets other logins through, but axes would still record
    their failures (and count them against a username). The API's /auth/token
    has its own rate limit and error envelope, so its logins are left alone.
    """

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request, **kwargs)

    def user_logged_in(self, sender, request, user, **kwargs):
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)

    def user_logged_out(self, sender, request, user, **kwargs):
        if request is not None and self.is_admin_request(request):
            super().user_logged_out(sender, request, user, **kwargs)
