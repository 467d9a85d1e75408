from django.contrib.admin.apps import AdminConfig


class OperatorsAdminConfig(AdminConfig):
    """django.contrib.admin with the operators' site (config.admin.OperatorsAdminSite) as admin.site."""

    default_site = "config.admin.OperatorsAdminSite"
