"""Usernames name payees: "Alice" and "alice" must not be two people.

user_register checks this case-insensitively; the index closes the race between
two registrations of the same name in different case.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("wallets", "0002_ledger_guards"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [
        migrations.RunSQL(
            "CREATE UNIQUE INDEX auth_user_username_lower_uniq ON auth_user (lower(username))",
            "DROP INDEX auth_user_username_lower_uniq",
        )
    ]
