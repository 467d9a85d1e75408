"""Database guards of the ledger (PostgreSQL): balanced, append-only transactions.

The CHECK constraints of 0001 hold on every database. These triggers need
PostgreSQL, the only database of a real deployment; the embedded SQLite run
relies on the service code and the CHECKs alone.
"""

from django.db import migrations

from config.migration_sql import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- The transaction's id column is named by the trigger's argument.
    tx uuid := (to_jsonb(NEW) ->> TG_ARGV[0])::uuid;
    total numeric;
    legs integer;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, legs
      FROM wallets_ledgerentry WHERE transaction_id = tx;
    IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % legs summing to %', tx, legs, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON wallets_ledgerentry DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced('transaction_id');
CREATE CONSTRAINT TRIGGER ledger_transaction_balanced
    AFTER INSERT ON wallets_ledgertransaction DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced('id');

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'posted ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_entry_append_only
    BEFORE UPDATE OR DELETE ON wallets_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transaction_append_only
    BEFORE UPDATE OR DELETE ON wallets_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""

BACKWARD = """
DROP TRIGGER ledger_transaction_append_only ON wallets_ledgertransaction;
DROP TRIGGER ledger_entry_append_only ON wallets_ledgerentry;
DROP FUNCTION ledger_refuse_change();
DROP TRIGGER ledger_transaction_balanced ON wallets_ledgertransaction;
DROP TRIGGER ledger_entry_balanced ON wallets_ledgerentry;
DROP FUNCTION ledger_check_balanced() CASCADE;
"""


class Migration(migrations.Migration):
    dependencies = [("wallets", "0001_initial")]
    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
