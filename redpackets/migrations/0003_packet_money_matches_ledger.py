"""The money of a packet matches the ledger, in the database (PostgreSQL).

- Funding: a packet's escrow received exactly its total in its `packet_send`
  (checked at commit, with the packet and its shares).
- Claims: a claimed share's claim transaction pays exactly its amount from the
  packet's escrow to the claimer's own wallet (checked at commit).
- Refund: settling a packet records as refunded exactly the sum of its refunded
  shares, and its `packet_refund` moves exactly that from escrow (checked when
  settled_at is set, after the refund's shares and posting).
"""

from django.db import migrations

from config.migration_sql import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION packet_check_funding() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    send uuid;
    funded numeric;
BEGIN
    -- Key look-ups only (one send per packet is a unique constraint).
    SELECT id INTO send FROM wallets_ledgertransaction WHERE packet_id = NEW.id AND kind = 'packet_send';
    SELECT COALESCE(SUM(amount), 0) INTO funded
      FROM wallets_ledgerentry WHERE transaction_id = send AND account_id = NEW.escrow_account_id;
    IF funded <> NEW.total_amount THEN
        RAISE EXCEPTION 'packet % of % is funded with % in escrow', NEW.id, NEW.total_amount, funded
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER packet_funded_with_its_total
    AFTER INSERT ON redpackets_packet DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION packet_check_funding();

CREATE FUNCTION share_check_claim_payment() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    claimer_wallet bigint;
    escrow bigint;
    to_claimer numeric;
    from_escrow numeric;
BEGIN
    -- Primary- and unique-key look-ups only: this runs on every claim.
    SELECT id INTO claimer_wallet FROM wallets_account WHERE user_id = NEW.claimed_by_id AND kind = 'wallet';
    SELECT escrow_account_id INTO escrow FROM redpackets_packet WHERE id = NEW.packet_id;
    PERFORM 1 FROM wallets_ledgertransaction
      WHERE id = NEW.claim_transaction_id AND kind = 'packet_claim' AND packet_id = NEW.packet_id;
    IF FOUND THEN
        SELECT SUM(amount) FILTER (WHERE account_id = claimer_wallet),
               SUM(amount) FILTER (WHERE account_id = escrow)
          INTO to_claimer, from_escrow
          FROM wallets_ledgerentry WHERE transaction_id = NEW.claim_transaction_id;
    END IF;
    IF to_claimer IS DISTINCT FROM NEW.amount OR from_escrow IS DISTINCT FROM -NEW.amount THEN
        RAISE EXCEPTION 'share % of % pays % to its claimer and % from escrow',
            NEW.id, NEW.amount, to_claimer, from_escrow
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER share_claim_pays_its_amount
    AFTER UPDATE OF claimed_by_id ON redpackets_share DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.claimed_by_id IS NULL AND NEW.claimed_by_id IS NOT NULL)
    EXECUTE FUNCTION share_check_claim_payment();

CREATE FUNCTION packet_check_refund() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    refund uuid;
    shares numeric;
    posted numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO shares FROM redpackets_share WHERE packet_id = NEW.id AND refunded;
    SELECT id INTO refund FROM wallets_ledgertransaction WHERE packet_id = NEW.id AND kind = 'packet_refund';
    SELECT COALESCE(-SUM(amount), 0) INTO posted
      FROM wallets_ledgerentry WHERE transaction_id = refund AND account_id = NEW.escrow_account_id;
    IF NEW.refunded_amount <> shares OR NEW.refunded_amount <> posted THEN
        RAISE EXCEPTION 'packet % settles a refund of %, its refunded shares sum to % and escrow paid %',
            NEW.id, NEW.refunded_amount, shares, posted
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER packet_refund_matches_shares_and_ledger
    BEFORE UPDATE ON redpackets_packet
    FOR EACH ROW WHEN (OLD.settled_at IS NULL AND NEW.settled_at IS NOT NULL)
    EXECUTE FUNCTION packet_check_refund();
"""

BACKWARD = """
DROP TRIGGER packet_refund_matches_shares_and_ledger ON redpackets_packet;
DROP FUNCTION packet_check_refund();
DROP TRIGGER share_claim_pays_its_amount ON redpackets_share;
DROP FUNCTION share_check_claim_payment();
DROP TRIGGER packet_funded_with_its_total ON redpackets_packet;
DROP FUNCTION packet_check_funding();
"""


class Migration(migrations.Migration):
    dependencies = [("redpackets", "0002_packet_guards"), ("wallets", "0004_wallet_balance_follows_entries")]
    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
