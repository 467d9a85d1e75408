from django.apps import AppConfig


class RedpacketsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "redpackets"
    verbose_name = "Red packets"
