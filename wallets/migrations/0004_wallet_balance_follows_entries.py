"""A wallet's stored balance follows its entries, in the database (PostgreSQL).

- Each wallet entry's balance_after is the previous entry's balance_after plus
  its amount (entries of one wallet are posted one at a time: ledger_post holds
  the wallet row lock), so the entries form an unbroken chain; system-account
  entries carry no balance_after.
- At commit, a wallet whose balance changed must equal its newest entry's
  balance_after: a balance cannot move without a posting.
"""

from django.db import migrations

from config.migration_sql import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION ledger_entry_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    is_wallet boolean;
    previous bigint;
BEGIN
    SELECT kind = 'wallet' INTO is_wallet FROM wallets_account WHERE id = NEW.account_id;
    IF NOT is_wallet THEN
        IF NEW.balance_after IS NOT NULL THEN
            RAISE EXCEPTION 'entry on system account % carries a balance', NEW.account_id
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    SELECT balance_after INTO previous FROM wallets_ledgerentry
     WHERE account_id = NEW.account_id ORDER BY id DESC LIMIT 1;
    IF NEW.balance_after IS DISTINCT FROM COALESCE(previous, 0) + NEW.amount THEN
        RAISE EXCEPTION 'wallet % entry says balance % after %, but the previous entry left %',
            NEW.account_id, NEW.balance_after, NEW.amount, COALESCE(previous, 0)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_entry_balance_chain
    BEFORE INSERT ON wallets_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_chain();

CREATE FUNCTION wallet_balance_matches_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stored bigint;
    latest bigint;
BEGIN
    SELECT balance INTO stored FROM wallets_account WHERE id = NEW.id;
    SELECT balance_after INTO latest FROM wallets_ledgerentry
     WHERE account_id = NEW.id ORDER BY id DESC LIMIT 1;
    IF stored IS DISTINCT FROM COALESCE(latest, 0) THEN
        RAISE EXCEPTION 'wallet % holds % but its entries end at %', NEW.id, stored, COALESCE(latest, 0)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER wallet_balance_follows_entries
    AFTER UPDATE OF balance ON wallets_account DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.kind = 'wallet' AND NEW.balance IS DISTINCT FROM OLD.balance)
    EXECUTE FUNCTION wallet_balance_matches_entries();
"""

BACKWARD = """
DROP TRIGGER wallet_balance_follows_entries ON wallets_account;
DROP FUNCTION wallet_balance_matches_entries();
DROP TRIGGER ledger_entry_balance_chain ON wallets_ledgerentry;
DROP FUNCTION ledger_entry_chain();
"""


class Migration(migrations.Migration):
    dependencies = [("wallets", "0003_username_unique_ignoring_case")]
    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
