from django.apps import AppConfig
from django.db.models.signals import post_delete, post_init, post_save


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from . import signals
        from .models import CoinLedgerEntry, User

        post_init.connect(signals.remember_loaded_email, sender=User, dispatch_uid="accounts_user_loaded_email")
        post_save.connect(signals.invalidate_user, sender=User, dispatch_uid="accounts_user_saved")
        post_delete.connect(signals.invalidate_user, sender=User, dispatch_uid="accounts_user_deleted")
        post_save.connect(signals.invalidate_ledger, sender=CoinLedgerEntry, dispatch_uid="accounts_ledger_saved")
        post_delete.connect(signals.invalidate_ledger, sender=CoinLedgerEntry, dispatch_uid="accounts_ledger_deleted")
