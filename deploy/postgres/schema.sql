-- eligd: the reference records table (CONTRACT §1) and its transactional outbox.
--
-- Apply once to an empty database (safe to re-run):
--   psql "postgres://…/records" -v ON_ERROR_STOP=1 -f deploy/postgres/schema.sql
--
-- * `members` mirrors the member record. The database assigns `version` from one sequence on
--   every insert and update, so a person's versions strictly increase whatever the
--   application writes; a delete is recorded with a version from the same sequence.
-- * Every insert, update and delete writes a row into `member_outbox` in the same
--   transaction (a trigger), and notifies `eligd_outbox`; `eligd relay` moves those rows to
--   the Redis stream as native change events and deletes them. A change is therefore in the
--   stream if and only if its transaction committed.
-- * The table checks the shape of each column; the record rules that relate fields (check
--   digits, a dependent's main insured, one primary insurer…) are checked by eligd itself,
--   by the relay (a row that breaks them is marked `rejected` in the outbox and skipped) and
--   again by every replica.
-- * REPLICA IDENTITY FULL lets Debezium (the alternative to the relay) carry the whole old
--   row, version included, in delete events.

CREATE SEQUENCE IF NOT EXISTS member_version_seq AS bigint;

CREATE TABLE IF NOT EXISTS members (
    national_id        text        PRIMARY KEY CHECK (national_id ~ '^[0-9]{10}$'),
    version            bigint      NOT NULL,  -- set by members_bump_version
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

-- The relay reads pending rows in id order.
CREATE INDEX IF NOT EXISTS member_outbox_pending ON member_outbox (id) WHERE rejected IS NULL;

-- A queue table: every relayed row is deleted, and the dead rows slow the relay's reads until
-- vacuumed. Vacuum it after every 10,000 deletions instead of after a fraction of the table.
ALTER TABLE member_outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                               autovacuum_vacuum_cost_delay = 0);

CREATE OR REPLACE FUNCTION members_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('member_version_seq');
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION members_to_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A delete, or an update that changes the national ID, removes the old person.
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.national_id <> NEW.national_id) THEN
        INSERT INTO member_outbox (national_id, op, version)
        VALUES (OLD.national_id, 'delete', nextval('member_version_seq'));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO member_outbox (national_id, op, version, member)
        VALUES (NEW.national_id, 'upsert', NEW.version, to_jsonb(NEW) - 'updated_at');
    END IF;
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
CREATE TRIGGER members_bump_version
    BEFORE INSERT OR UPDATE ON members
    FOR EACH ROW EXECUTE FUNCTION members_bump_version();

DROP TRIGGER IF EXISTS members_to_outbox ON members;
CREATE TRIGGER members_to_outbox
    AFTER INSERT OR UPDATE OR DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION members_to_outbox();

DROP TRIGGER IF EXISTS members_refuse_truncate ON members;
CREATE TRIGGER members_refuse_truncate
    BEFORE TRUNCATE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION members_refuse_truncate();
