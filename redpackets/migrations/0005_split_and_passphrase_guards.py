"""Database guards of the verifiable split and of passphrase tries (PostgreSQL).

- A random packet sent from now on carries its rp-split-v1 seed and cap (NOT VALID:
  random packets sent before v1.1 have neither, and their terms never change).
- A packet's shares are numbered 0 to share_count - 1 (share i is rp-split-v1's
  share i) and none is above the packet's cap (checked at commit, with the shares).
- Passphrase tries are counted only on packets with a passphrase, one at a time
  upwards (the CHECK of 0004 bounds them), and never deleted: a lock-out is final.
"""

from django.db import migrations

from config.migration_sql import run_sql_on_postgresql

FORWARD = """
ALTER TABLE redpackets_packet ADD CONSTRAINT packet_random_has_split_seed
    CHECK (kind <> 'random' OR split_seed IS NOT NULL) NOT VALID;

CREATE FUNCTION packet_check_share_numbers() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_seq integer;
    last_seq integer;
    largest numeric;
BEGIN
    SELECT MIN(seq), MAX(seq), MAX(amount) INTO first_seq, last_seq, largest
      FROM redpackets_share WHERE packet_id = NEW.id;
    IF first_seq IS DISTINCT FROM 0 OR last_seq IS DISTINCT FROM NEW.share_count - 1
       OR largest > NEW.share_cap THEN
        RAISE EXCEPTION 'packet % has shares numbered % to % up to %, expected 0 to % up to its cap %',
            NEW.id, first_seq, last_seq, largest, NEW.share_count - 1, NEW.share_cap
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER packet_shares_numbered_within_cap
    AFTER INSERT ON redpackets_packet DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION packet_check_share_numbers();

CREATE FUNCTION passphrase_attempt_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'passphrase tries are never deleted' USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM redpackets_packet WHERE id = NEW.packet_id AND passphrase_hmac IS NOT NULL;
        IF NOT FOUND OR NEW.wrong_tries <> 1 THEN
            RAISE EXCEPTION 'packet % has no passphrase, or a first count of % wrong tries', NEW.packet_id, NEW.wrong_tries
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.packet_id <> OLD.packet_id OR NEW.user_id <> OLD.user_id OR NEW.wrong_tries <> OLD.wrong_tries + 1 THEN
        RAISE EXCEPTION 'passphrase tries of % on % go from % to %: only up by one',
            OLD.user_id, OLD.packet_id, OLD.wrong_tries, NEW.wrong_tries
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER passphrase_attempt_counts_up
    BEFORE INSERT OR UPDATE OR DELETE ON redpackets_passphraseattempt
    FOR EACH ROW EXECUTE FUNCTION passphrase_attempt_guard();
"""

BACKWARD = """
DROP TRIGGER passphrase_attempt_counts_up ON redpackets_passphraseattempt;
DROP FUNCTION passphrase_attempt_guard();
DROP TRIGGER packet_shares_numbered_within_cap ON redpackets_packet;
DROP FUNCTION packet_check_share_numbers();
ALTER TABLE redpackets_packet DROP CONSTRAINT packet_random_has_split_seed;
"""


class Migration(migrations.Migration):
    dependencies = [("redpackets", "0004_packet_split_seed_and_passphrase")]
    operations = [run_sql_on_postgresql(FORWARD, BACKWARD)]
