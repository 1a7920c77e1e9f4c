-- eligd: the reference records table (docs/records.md) and its transactional outbox.
--
-- Apply once to an empty database (safe to re-run; a re-run on a table holding rows that
-- break a rule below fails and names the constraint, so those rows can be fixed first):
--   psql "postgres://…/records" -v ON_ERROR_STOP=1 -f deploy/postgres/schema.sql
--
-- * `members` mirrors the member record. The database draws every version of a person from
--   one sequence, deletes included, in BEFORE triggers that hold the person's row (waiting
--   for a transaction that is deleting or renaming it): two transactions touching the same
--   person draw their versions in commit order, so a re-inserted person always carries a
--   higher version than its own delete, whatever the statement (a bulk DELETE racing a
--   re-insert, `WITH d AS (DELETE …) INSERT …`, an UPDATE that renames people).
-- * Every insert, update and delete writes a row into `member_outbox` in the same
--   transaction, and notifies `eligd_outbox`; `eligd relay` moves those rows to the Redis
--   stream as native change events and deletes them. A change is therefore in the stream if
--   and only if its transaction committed.
-- * The table refuses at write time every row the record rules refuse (the `*_rule` CHECK
--   constraints mirror src/member/; tests/it/records_rules.rs holds both to the same cases),
--   so a committed row always reaches every replica, whether it follows the stream or is
--   bootstrapped from the table.
-- * REPLICA IDENTITY FULL lets Debezium (the alternative to the relay) carry the whole old
--   row, version included, in delete events.
-- * Relayed rows are not deleted at once: they stay, with the stream ID they were written
--   under (`relayed_id`), for `--outbox-keep-secs` and until Redis replicas acknowledged them
--   (`WAIT`, `--wait-replicas`). A Redis that comes back without them (restarted from an older
--   copy, or failed over to a replica that lacked them) gets them written back with the same
--   IDs, so every replica carries on as if nothing happened.
-- * `eligd_relay_state` is the relay's memory of the stream it writes: its epoch, the newest
--   entry it wrote, and the newest entry whose row it has deleted. A Redis that lost entries
--   the relay no longer holds is noticed, and the relay starts a new stream epoch so that
--   replicas resynchronise instead of silently missing changes.

CREATE SEQUENCE IF NOT EXISTS member_version_seq AS bigint;

CREATE TABLE IF NOT EXISTS members (
    national_id        text        PRIMARY KEY CHECK (national_id ~ '^[0-9]{10}$'),
    version            bigint      NOT NULL,  -- set by members_version
    kind               text        NOT NULL CHECK (kind IN ('main', 'dependent', 'pensioner')),
    main_national_id   text        CHECK (main_national_id ~ '^[0-9]{10}$'),
    relation           text        CHECK (relation IN ('spouse', 'child', 'parent', 'other')),
    scheme             text        NOT NULL CHECK (scheme IN ('mandatory', 'voluntary', 'self_employed',
                                                              'housewife', 'driver', 'pensioner', 'other')),
    status             text        NOT NULL CHECK (status IN ('active', 'suspended', 'deceased')),
    coverage_until     date,
    services           text[]      NOT NULL DEFAULT '{}',
    special_conditions text[]      NOT NULL DEFAULT '{}',
    other_insurers     jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(other_insurers) = 'array'),
    booklet_no         text        UNIQUE CHECK (booklet_no ~ '^[0-9]{1,18}$'),
    display_name       text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The record rules (docs/records.md, src/member/), checked when a row is written. Each CHECK is
-- named for its field, so the error a writer gets says which field is wrong.

-- The national ID's check digit (src/national_id.rs); the ten same-digit IDs are refused.
CREATE OR REPLACE FUNCTION eligd_valid_national_id(id text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    s int := 0;
    r int;
    check_digit int;
BEGIN
    IF id !~ '^[0-9]{10}$' OR id = repeat(substr(id, 1, 1), 10) THEN
        RETURN false;
    END IF;
    FOR i IN 0..8 LOOP
        s := s + (ascii(substr(id, i + 1, 1)) - 48) * (10 - i);
    END LOOP;
    r := s % 11;
    check_digit := ascii(substr(id, 10, 1)) - 48;
    RETURN (r < 2 AND check_digit = r) OR (r >= 2 AND check_digit = 11 - r);
END
$$;

-- Short lowercase codes (special conditions, other insurers): at most 16, each 1 to 32 of
-- a-z 0-9 _ -.
CREATE OR REPLACE FUNCTION eligd_valid_codes(codes text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    code text;
BEGIN
    IF coalesce(array_ndims(codes), 1) <> 1 OR cardinality(codes) > 16 THEN
        RETURN false;
    END IF;
    FOREACH code IN ARRAY codes LOOP
        IF code IS NULL OR code !~ '^[a-z0-9_-]{1,32}$' THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- Other insurers: an array of at most 16 objects, each with a `code` (a short code) and a
-- boolean `primary`; at most one primary.
CREATE OR REPLACE FUNCTION eligd_valid_insurers(insurers jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    insurer jsonb;
    primaries int := 0;
BEGIN
    IF jsonb_typeof(insurers) <> 'array' OR jsonb_array_length(insurers) > 16 THEN
        RETURN false;
    END IF;
    FOR insurer IN SELECT jsonb_array_elements(insurers) LOOP
        IF jsonb_typeof(insurer) <> 'object'
           OR jsonb_typeof(insurer -> 'code') IS DISTINCT FROM 'string'
           OR jsonb_typeof(insurer -> 'primary') IS DISTINCT FROM 'boolean'
           OR (insurer ->> 'code') !~ '^[a-z0-9_-]{1,32}$' THEN
            RETURN false;
        END IF;
        IF (insurer -> 'primary')::boolean THEN
            primaries := primaries + 1;
        END IF;
    END LOOP;
    RETURN primaries <= 1;
END
$$;

-- A display name: no control characters, at most 200 characters once white space is
-- trimmed from both ends (a name of only white space is no name).
CREATE OR REPLACE FUNCTION eligd_valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT name !~ '[\u0001-\u001f\u007f-\u009f]'
       AND char_length(regexp_replace(name,
             '^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$',
             '', 'g')) <= 200
$$;

ALTER TABLE members
    DROP CONSTRAINT IF EXISTS members_national_id_rule,
    DROP CONSTRAINT IF EXISTS members_version_rule,
    DROP CONSTRAINT IF EXISTS members_main_national_id_rule,
    DROP CONSTRAINT IF EXISTS members_relation_rule,
    DROP CONSTRAINT IF EXISTS members_coverage_until_rule,
    DROP CONSTRAINT IF EXISTS members_services_rule,
    DROP CONSTRAINT IF EXISTS members_special_conditions_rule,
    DROP CONSTRAINT IF EXISTS members_other_insurers_rule,
    DROP CONSTRAINT IF EXISTS members_display_name_rule,
    ADD CONSTRAINT members_national_id_rule CHECK (eligd_valid_national_id(national_id)),
    ADD CONSTRAINT members_version_rule CHECK (version >= 1),
    ADD CONSTRAINT members_main_national_id_rule CHECK (
        (kind = 'dependent') = (main_national_id IS NOT NULL)
        AND (main_national_id IS NULL
             OR (eligd_valid_national_id(main_national_id) AND main_national_id <> national_id))),
    ADD CONSTRAINT members_relation_rule CHECK (relation IS NULL OR kind = 'dependent'),
    ADD CONSTRAINT members_coverage_until_rule
        CHECK (coverage_until BETWEEN DATE '1900-01-01' AND DATE '2199-12-31'),
    ADD CONSTRAINT members_services_rule CHECK (
        coalesce(array_ndims(services), 1) = 1
        AND array_position(services, NULL) IS NULL
        AND services <@ ARRAY['outpatient', 'inpatient', 'pharmacy', 'paraclinic', 'dental']),
    ADD CONSTRAINT members_special_conditions_rule CHECK (eligd_valid_codes(special_conditions)),
    ADD CONSTRAINT members_other_insurers_rule CHECK (eligd_valid_insurers(other_insurers)),
    ADD CONSTRAINT members_display_name_rule CHECK (eligd_valid_name(display_name));

ALTER TABLE members REPLICA IDENTITY FULL;

-- A clinic asks for a dependent's main insured; operators look up a household.
CREATE INDEX IF NOT EXISTS members_main_national_id
    ON members (main_national_id) WHERE main_national_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS member_outbox (
    id          bigserial   PRIMARY KEY,
    national_id text        NOT NULL,
    op          text        NOT NULL CHECK (op IN ('upsert', 'delete')),
    version     bigint      NOT NULL,
    member      jsonb,                      -- the row as a record (upserts only)
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    rejected    text                        -- why the relay refused it (the row breaks a record rule)
);

-- Relayed, kept rows (see the header).
ALTER TABLE member_outbox ADD COLUMN IF NOT EXISTS relayed_id text;
ALTER TABLE member_outbox ADD COLUMN IF NOT EXISTS relayed_at timestamptz;
ALTER TABLE member_outbox ADD COLUMN IF NOT EXISTS replicated boolean NOT NULL DEFAULT false;

-- The relay reads pending rows in id order.
DROP INDEX IF EXISTS member_outbox_pending;
CREATE INDEX IF NOT EXISTS member_outbox_unrelayed ON member_outbox (id)
    WHERE rejected IS NULL AND relayed_id IS NULL;
CREATE INDEX IF NOT EXISTS member_outbox_kept ON member_outbox (relayed_at)
    WHERE relayed_id IS NOT NULL;

-- A queue table: every relayed row is deleted, and the dead rows slow the relay's reads until
-- vacuumed. Vacuum it after every 10,000 deletions instead of after a fraction of the table.
ALTER TABLE member_outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                               autovacuum_vacuum_cost_delay = 0);

-- Relay bookkeeping: the stream epoch it writes under and the newest entry it wrote there.
CREATE TABLE IF NOT EXISTS eligd_relay_state (
    stream     text        PRIMARY KEY,
    epoch      text        NOT NULL,
    last_id    text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE eligd_relay_state ADD COLUMN IF NOT EXISTS pruned_id text NOT NULL DEFAULT '0-0';

-- Fencing (docs/decisions/0008-relay-fencing.md): every acquisition of the relay lock draws a
-- new token here, and every stream write carries it; Redis refuses a write whose token is
-- older than the newest it has seen, so a deposed relay's late write never lands.
CREATE TABLE IF NOT EXISTS eligd_relay_fence (
    stream text   PRIMARY KEY,
    token  bigint NOT NULL
);
-- Versions never go back (decision 0009): when the relay finds the version sequence behind the
-- highest version the stream carries (a failover to a standby that lacked transactions, a
-- restore from a backup), it raises the sequence past it and remembers that point here;
-- outbox rows whose version is below it were drawn before and are re-versioned, not relayed.
ALTER TABLE eligd_relay_fence ADD COLUMN IF NOT EXISTS version_floor bigint NOT NULL DEFAULT 0;
-- Set with the raise, cleared once the new stream epoch is recorded: a relay that stops in
-- between still owes the new epoch, and the next session starts it.
ALTER TABLE eligd_relay_fence ADD COLUMN IF NOT EXISTS epoch_owed boolean NOT NULL DEFAULT false;
-- Versions between the highest relayed and the floor are kept for re-versioned deletes (the
-- next one to give), so that any version drawn after the raise (an insert of that person
-- still uncommitted, say) outranks them.
ALTER TABLE eligd_relay_fence ADD COLUMN IF NOT EXISTS reserve_next bigint NOT NULL DEFAULT 0;
-- The highest committed version, read at every relay session (decision 0009).
CREATE INDEX IF NOT EXISTS members_by_version ON members (version);

-- Delete markers that survive a bootstrap from the table: the version of every deleted person,
-- kept while the stream may still carry an older upsert of them (the relay prunes them past
-- `--retain-hours`). `snapshot build --from-postgres` loads them as tombstones, so a replica
-- started from the table refuses an upsert older than the delete.
CREATE TABLE IF NOT EXISTS eligd_deleted_members (
    national_id text        PRIMARY KEY,
    version     bigint      NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS eligd_deleted_members_at ON eligd_deleted_members (deleted_at);
CREATE INDEX IF NOT EXISTS eligd_deleted_members_version ON eligd_deleted_members (version);


-- Records a delete marker (the newest version wins).
CREATE OR REPLACE FUNCTION eligd_mark_deleted(id text, v bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO eligd_deleted_members (national_id, version) VALUES (id, v)
    ON CONFLICT (national_id) DO UPDATE
        SET version = GREATEST(eligd_deleted_members.version, EXCLUDED.version), deleted_at = now()
$$;

-- A stream entry ID (`ms-seq`) as a pair that sorts in stream order.
CREATE OR REPLACE FUNCTION eligd_stream_id(id text) RETURNS numeric[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ARRAY[split_part(id, '-', 1)::numeric, split_part(id, '-', 2)::numeric]
$$;

-- Draws the version of every change, in the order the changes of one person commit. An update
-- or a delete holds the person's row lock here already. An insert (or a rename) first locks
-- the row that holds its national ID, if any: when another transaction is deleting or
-- renaming that row, this waits for it to commit, so the new version comes after that
-- delete's (when the row is still there, the insert then fails on the primary key anyway).
-- A delete's outbox row is written here, with its version, so that a re-insert later in the
-- same statement (`WITH d AS (DELETE …) INSERT …`) draws a higher one.
CREATE OR REPLACE FUNCTION members_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        v := nextval('member_version_seq');
        INSERT INTO member_outbox (national_id, op, version) VALUES (OLD.national_id, 'delete', v);
        PERFORM eligd_mark_deleted(OLD.national_id, v);
        PERFORM pg_notify('eligd_outbox', '');
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' OR OLD.national_id <> NEW.national_id THEN
        PERFORM 1 FROM members WHERE national_id = NEW.national_id FOR UPDATE;
    END IF;
    NEW.version := nextval('member_version_seq');
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Writes the upsert of every inserted or updated row. An update that changes the national
-- ID also removes the old person, with the new row's version (drawn while this transaction
-- holds the old row, so after every earlier change of the old ID and before any later one),
-- unless the same statement gave the old ID to another row (a rotation of IDs): then that
-- row's own upsert says what the old ID holds now.
CREATE OR REPLACE FUNCTION members_to_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.national_id <> NEW.national_id
       AND NOT EXISTS (SELECT 1 FROM members WHERE national_id = OLD.national_id) THEN
        INSERT INTO member_outbox (national_id, op, version)
        VALUES (OLD.national_id, 'delete', NEW.version);
        PERFORM eligd_mark_deleted(OLD.national_id, NEW.version);
    END IF;
    INSERT INTO member_outbox (national_id, op, version, member)
    VALUES (NEW.national_id, 'upsert', NEW.version, to_jsonb(NEW) - 'updated_at');
    -- Identical notifications within a transaction are delivered once, at commit.
    PERFORM pg_notify('eligd_outbox', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION members_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE members would bypass the change feed; DELETE the rows instead';
END
$$;

DROP TRIGGER IF EXISTS members_bump_version ON members;
DROP FUNCTION IF EXISTS members_bump_version();
DROP FUNCTION IF EXISTS eligd_lock_person(text);
DROP TRIGGER IF EXISTS members_version ON members;
CREATE TRIGGER members_version
    BEFORE INSERT OR UPDATE OR DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION members_version();

DROP TRIGGER IF EXISTS members_to_outbox ON members;
CREATE TRIGGER members_to_outbox
    AFTER INSERT OR UPDATE ON members
    FOR EACH ROW EXECUTE FUNCTION members_to_outbox();

DROP TRIGGER IF EXISTS members_refuse_truncate ON members;
CREATE TRIGGER members_refuse_truncate
    BEFORE TRUNCATE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION members_refuse_truncate();
