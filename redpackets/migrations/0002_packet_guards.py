"""Database guards of packets and shares (PostgreSQL).

- A packet's shares sum to its total and number exactly its share_count
  (checked at commit, when the packet and its shares exist together).
- A packet's terms never change; only the expiry refund sets settled_at and
  refunded_amount, once.
- A share's terms never change, and a claimed or refunded share is final.
"""

from django.db import migrations

from config.migration_sql import run_sql_on_postgresql

FORWARD = """
CREATE FUNCTION packet_check_shares() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
    shares integer;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, shares
      FROM redpackets_share WHERE packet_id = NEW.id;
    IF total <> NEW.total_amount OR shares <> NEW.share_count THEN
        RAISE EXCEPTION 'packet % has % shares summing to %, expected % summing to %',
            NEW.id, shares, total, NEW.share_count, NEW.total_amount
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER packet_shares_match_total
    AFTER INSERT ON redpackets_packet DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION packet_check_shares();

CREATE FUNCTION packet_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'packets are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.settled_at IS NOT NULL
       OR (to_jsonb(NEW) - 'settled_at' - 'refunded_amount') <> (to_jsonb(OLD) - 'settled_at' - 'refunded_amount') THEN
        RAISE EXCEPTION 'packet % is settled, or its terms would change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER packet_terms_fixed
    BEFORE UPDATE OR DELETE ON redpackets_packet
    FOR EACH ROW EXECUTE FUNCTION packet_guard_update();

CREATE FUNCTION share_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'shares are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.claimed_by_id IS NOT NULL OR OLD.refunded
       OR NEW.packet_id <> OLD.packet_id OR NEW.seq <> OLD.seq OR NEW.amount <> OLD.amount THEN
        RAISE EXCEPTION 'share % is claimed or refunded, or its terms would change', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER share_settled_is_final
    BEFORE UPDATE OR DELETE ON redpackets_share
    FOR EACH ROW EXECUTE FUNCTION share_guard_update();
"""

BACKWARD = """
DROP TRIGGER share_settled_is_final ON redpackets_share;
DROP FUNCTION share_guard_update();
DROP TRIGGER packet_terms_fixed ON redpackets_packet;
DROP FUNCTION packet_guard_update();
DROP TRIGGER packet_shares_match_total ON redpackets_packet;
DROP FUNCTION packet_check_shares();
"""


class Migration(migrations.Migration):
    dependencies = [("redpackets", "0001_initial")]
    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
