from django.apps import AppConfig


class WalletsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "wallets"

    def ready(self):
        from wallets import checks  # noqa: F401  (registers the deploy checks)
