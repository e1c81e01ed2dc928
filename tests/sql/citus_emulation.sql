-- citus_emulation.sql -- a plain-SQL stand-in for the parts of the Citus 13.2 extension that the
-- citus-ha policy host touches on the coordinator.  Used in CI, where Citus itself cannot be
-- installed.  See docs/citus-behaviour.md for the behaviour it reproduces.
--
-- Run it as a superuser inside the target database.  It is idempotent: running it again keeps
-- every row and only (re)defines functions.  It runs in its own transaction (BEGIN ... COMMIT),
-- so do not run it inside a transaction you want to keep open.
--
-- What it creates, in pg_catalog exactly as Citus names them:
--   type     noderole ('primary', 'secondary', 'unavailable')
--   sequence pg_dist_node_nodeid_seq
--   tables   pg_dist_node, pg_dist_authinfo
--   funcs    citus_add_node, citus_update_node, citus_remove_node, citus_set_coordinator_host,
--            citus_pause_node_within_txn, citus_version
-- and, for its own bookkeeping, schema citus_emulation with:
--   config                   one row; metadata_sync_delay_ms (default 1000) is how long after
--                            the commit of a citus_update_node the workers count as out of sync
--   pending_metadata_sync    one row per transaction that ran an effective citus_update_node;
--                            committed_at is stamped by a deferred trigger right before COMMIT
--   shard_<groupid>          one table per node group, created on demand: the "shards" of that
--                            group.  citus_update_node on the group's primary row locks it
--                            IN EXCLUSIVE MODE (writes block, reads do not) until the
--                            transaction ends.  Write to it to observe the write pause.
--   shard_table(groupid)     returns (and creates if missing) citus_emulation.shard_<groupid>
--   metadata_sync_pending()  true while add/remove would be refused as out of sync
--   sync_metadata()          marks workers synced if no sync is pending (what Citus'
--                            maintenance daemon does); returns false while one is pending
--   wait_until_metadata_sync(timeout_ms) waits for the pending sync, then syncs
--
-- Creating relations in pg_catalog needs allow_system_table_mods (a superuser setting since
-- PostgreSQL 12); it is set with SET LOCAL, so it ends with this script's transaction.

BEGIN;

-- Serialise concurrent installs into the same database.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('citus_emulation.install'));

SET LOCAL allow_system_table_mods = on;
SET LOCAL client_min_messages = warning;
SET LOCAL search_path = pg_catalog;

CREATE SCHEMA IF NOT EXISTS citus_emulation;

DO $do$
BEGIN
    IF pg_catalog.to_regtype('pg_catalog.noderole') IS NULL THEN
        CREATE TYPE pg_catalog.noderole AS ENUM ('primary', 'secondary', 'unavailable');
    END IF;
END
$do$;

CREATE SEQUENCE IF NOT EXISTS pg_catalog.pg_dist_node_nodeid_seq
    AS integer MINVALUE 1 START WITH 1;

CREATE TABLE IF NOT EXISTS pg_catalog.pg_dist_node (
    nodeid integer NOT NULL DEFAULT pg_catalog.nextval('pg_catalog.pg_dist_node_nodeid_seq'),
    groupid integer NOT NULL,
    nodename text NOT NULL,
    nodeport integer NOT NULL DEFAULT 5432,
    noderack text NOT NULL DEFAULT 'default',
    hasmetadata boolean NOT NULL DEFAULT false,
    isactive boolean NOT NULL DEFAULT true,
    noderole pg_catalog.noderole NOT NULL DEFAULT 'primary',
    nodecluster name NOT NULL DEFAULT 'default',
    metadatasynced boolean DEFAULT false,
    shouldhaveshards boolean NOT NULL DEFAULT true,
    nodeisclone boolean NOT NULL DEFAULT false,
    nodeprimarynodeid integer NOT NULL DEFAULT 0,
    CONSTRAINT pg_dist_node_pkey PRIMARY KEY (nodeid),
    CONSTRAINT pg_dist_node_nodename_nodeport_key UNIQUE (nodename, nodeport)
);
ALTER SEQUENCE pg_catalog.pg_dist_node_nodeid_seq OWNED BY pg_catalog.pg_dist_node.nodeid;
GRANT SELECT ON pg_catalog.pg_dist_node TO PUBLIC;

-- nodeid 0 means "all nodes".
CREATE TABLE IF NOT EXISTS pg_catalog.pg_dist_authinfo (
    nodeid integer NOT NULL,
    rolename name NOT NULL CHECK (rolename <> ''),
    authinfo text NOT NULL CHECK (authinfo <> ''),
    CONSTRAINT pg_dist_authinfo_identification_index UNIQUE (rolename, nodeid)
);

-- ---------------------------------------------------------------------------------------------
-- Bookkeeping of the emulated metadata sync.

CREATE TABLE IF NOT EXISTS citus_emulation.config (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    metadata_sync_delay_ms integer NOT NULL DEFAULT 1000 CHECK (metadata_sync_delay_ms >= 0)
);
INSERT INTO citus_emulation.config DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS citus_emulation.pending_metadata_sync (
    xid bigint PRIMARY KEY,
    committed_at timestamptz
);

-- Fired (deferred) right before the COMMIT (or PREPARE TRANSACTION) of a transaction that ran
-- an effective citus_update_node: stamps the time the metadata-sync delay is measured from.
CREATE OR REPLACE FUNCTION citus_emulation.stamp_commit_time()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE citus_emulation.pending_metadata_sync
       SET committed_at = pg_catalog.clock_timestamp()
     WHERE xid = NEW.xid;
    RETURN NULL;
END
$fn$;

DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_trigger
         WHERE tgrelid = 'citus_emulation.pending_metadata_sync'::regclass
           AND tgname = 'stamp_commit_time'
    ) THEN
        CREATE CONSTRAINT TRIGGER stamp_commit_time
            AFTER INSERT ON citus_emulation.pending_metadata_sync
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION citus_emulation.stamp_commit_time();
    END IF;
END
$do$;

-- Real Citus cannot write its metadata on a hot standby.
CREATE OR REPLACE FUNCTION citus_emulation.ensure_not_in_recovery()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'XX000',
            MESSAGE = 'cannot assign TransactionIds during recovery';
    END IF;
END
$fn$;

-- The "shards" of a node group: citus_emulation.shard_<groupid>, created on demand.
CREATE OR REPLACE FUNCTION citus_emulation.shard_table(groupid integer)
RETURNS regclass
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text := pg_catalog.format('citus_emulation.%I', 'shard_' || $1);
    v_rel regclass;
BEGIN
    v_rel := pg_catalog.to_regclass(v_name);
    IF v_rel IS NULL THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(
            pg_catalog.hashtext('citus_emulation.shard_table'), $1);
        EXECUTE pg_catalog.format('CREATE TABLE IF NOT EXISTS %s (key bigint, value text)', v_name);
        v_rel := pg_catalog.to_regclass(v_name);
    END IF;
    RETURN v_rel;
END
$fn$;

-- Lock a group's shards the way citus_update_node / citus_pause_node_within_txn do: writes to
-- them block until the transaction ends, reads go on.
CREATE OR REPLACE FUNCTION citus_emulation.lock_group_shards(groupid integer)
RETURNS void
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE pg_catalog.format('LOCK TABLE %s IN EXCLUSIVE MODE',
                              citus_emulation.shard_table($1));
END
$fn$;

-- True while the workers must be treated as out of sync: inside the transaction that ran an
-- effective citus_update_node, and for metadata_sync_delay_ms after that transaction committed.
CREATE OR REPLACE FUNCTION citus_emulation.metadata_sync_pending()
RETURNS boolean
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (
        SELECT 1
          FROM citus_emulation.pending_metadata_sync p
         WHERE (p.committed_at IS NULL AND p.xid = pg_catalog.txid_current_if_assigned())
            OR p.committed_at > pg_catalog.clock_timestamp() - pg_catalog.make_interval(
                   secs => (SELECT c.metadata_sync_delay_ms FROM citus_emulation.config c)
                           / 1000.0)
    )
$fn$;

-- What Citus' maintenance daemon does once it has synced the workers: mark them synced.
-- Does nothing and returns false while a sync is still pending.
CREATE OR REPLACE FUNCTION citus_emulation.sync_metadata()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF citus_emulation.metadata_sync_pending() THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n
                WHERE n.hasmetadata AND n.metadatasynced IS NOT TRUE) THEN
        UPDATE pg_catalog.pg_dist_node n
           SET metadatasynced = true
         WHERE n.hasmetadata AND n.metadatasynced IS NOT TRUE;
    END IF;
    DELETE FROM citus_emulation.pending_metadata_sync p
     WHERE p.committed_at < pg_catalog.clock_timestamp() - interval '1 minute';
    RETURN true;
END
$fn$;

-- Waits until the pending metadata sync is done (like Citus' regression-test helper
-- wait_until_metadata_sync), then marks the workers synced.
CREATE OR REPLACE FUNCTION citus_emulation.wait_until_metadata_sync(timeout_ms integer DEFAULT 15000)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_deadline timestamptz := pg_catalog.clock_timestamp()
                              + pg_catalog.make_interval(secs => $1 / 1000.0);
BEGIN
    IF EXISTS (SELECT 1 FROM citus_emulation.pending_metadata_sync p
                WHERE p.committed_at IS NULL
                  AND p.xid = pg_catalog.txid_current_if_assigned()) THEN
        RAISE EXCEPTION 'metadata cannot get synced before this transaction commits';
    END IF;
    WHILE NOT citus_emulation.sync_metadata() LOOP
        IF pg_catalog.clock_timestamp() > v_deadline THEN
            RAISE EXCEPTION 'metadata did not get synced within % ms', $1;
        END IF;
        PERFORM pg_catalog.pg_sleep(0.02);
    END LOOP;
END
$fn$;

-- Called by every function that real Citus would propagate to the metadata workers: refuses
-- while a sync is pending and a worker primary with metadata is not synced; otherwise
-- finishes the sync (marks the workers synced).
CREATE OR REPLACE FUNCTION citus_emulation.ensure_metadata_synced()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r record;
BEGIN
    IF citus_emulation.metadata_sync_pending() THEN
        SELECT n.nodename, n.nodeport INTO r
          FROM pg_catalog.pg_dist_node n
         WHERE n.groupid <> 0
           AND n.hasmetadata
           AND n.isactive
           AND n.noderole = 'primary'
           AND n.metadatasynced IS NOT TRUE
         ORDER BY n.nodeid
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('%s:%s is a metadata node, but is out of sync',
                                            r.nodename, r.nodeport),
                HINT = 'If the node is up, wait until metadata gets synced to it and try again.';
        END IF;
    ELSE
        PERFORM citus_emulation.sync_metadata();
    END IF;
END
$fn$;

-- ---------------------------------------------------------------------------------------------
-- The Citus functions.

CREATE OR REPLACE FUNCTION pg_catalog.citus_version()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'Citus 13.2.2 SQL emulation (citus-ha test harness, not the real extension) on PostgreSQL '
           || pg_catalog.current_setting('server_version')
$fn$;

CREATE OR REPLACE FUNCTION pg_catalog.citus_add_node(
    nodename text,
    nodeport integer,
    groupid integer DEFAULT -1,
    noderole pg_catalog.noderole DEFAULT 'primary',
    nodecluster name DEFAULT 'default')
RETURNS integer
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text := $1;
    v_port integer := $2;
    v_group integer := $3;
    v_role pg_catalog.noderole := $4;
    v_cluster name := $5;
    v_id integer;
BEGIN
    PERFORM citus_emulation.ensure_not_in_recovery();

    -- An address that is already registered: return its id, change nothing.
    SELECT n.nodeid INTO v_id FROM pg_catalog.pg_dist_node n
     WHERE n.nodename = v_name AND n.nodeport = v_port;
    IF FOUND THEN
        RETURN v_id;
    END IF;

    LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;
    SELECT n.nodeid INTO v_id FROM pg_catalog.pg_dist_node n
     WHERE n.nodename = v_name AND n.nodeport = v_port;
    IF FOUND THEN
        RETURN v_id;
    END IF;

    -- The id is taken before the checks: a refused add still consumes one.
    v_id := pg_catalog.nextval('pg_catalog.pg_dist_node_nodeid_seq');

    IF v_group = -1 THEN
        SELECT COALESCE(max(n.groupid), 0) + 1 INTO v_group FROM pg_catalog.pg_dist_node n;
    END IF;

    IF v_role = 'primary' AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_dist_node n
         WHERE n.groupid = v_group AND n.noderole = 'primary'
    ) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'XX000',
            MESSAGE = pg_catalog.format('group %s already has a primary node', v_group);
    END IF;
    IF v_role = 'primary' AND v_cluster <> 'default' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'XX000',
            MESSAGE = 'primaries must be added to the default cluster';
    END IF;

    INSERT INTO pg_catalog.pg_dist_node AS n
        (nodeid, groupid, nodename, nodeport, noderack, hasmetadata, isactive, noderole,
         nodecluster, metadatasynced, shouldhaveshards, nodeisclone, nodeprimarynodeid)
    VALUES
        (v_id, v_group, v_name, v_port, 'default', v_role = 'primary' OR v_group = 0, true,
         v_role, v_cluster, v_role = 'primary' OR v_group = 0, v_group <> 0, false, 0);

    IF v_role = 'primary' THEN
        PERFORM citus_emulation.shard_table(v_group);
    END IF;

    -- Real Citus now propagates the new row to the metadata workers.
    PERFORM citus_emulation.ensure_metadata_synced();

    RETURN v_id;
END
$fn$;

CREATE OR REPLACE FUNCTION pg_catalog.citus_update_node(
    node_id integer,
    new_node_name text,
    new_node_port integer,
    force boolean DEFAULT false,
    lock_cooldown integer DEFAULT 10000)
RETURNS void
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id integer := $1;
    v_name text := $2;
    v_port integer := $3;
    v_other integer;
    r record;
BEGIN
    PERFORM citus_emulation.ensure_not_in_recovery();

    SELECT n.nodeid INTO v_other FROM pg_catalog.pg_dist_node n
     WHERE n.nodename = v_name AND n.nodeport = v_port;
    IF FOUND THEN
        IF v_other = v_id THEN
            RETURN;  -- the row already has this address: a no-op
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = 'there is already another node with the specified hostname and port';
    END IF;

    SELECT n.nodeid, n.groupid, n.noderole INTO r FROM pg_catalog.pg_dist_node n
     WHERE n.nodeid = v_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'no_data_found',
            MESSAGE = pg_catalog.format('node %s not found',
                                        CASE WHEN v_id < 0 THEN v_id::bigint + 4294967296
                                             ELSE v_id::bigint END);
    END IF;

    -- The write pause: block writes to the group's shards until the transaction ends.
    -- force/lock_cooldown are accepted but conflicting sessions are not terminated; this
    -- waits for them like force => false does.
    IF r.noderole = 'primary' THEN
        PERFORM citus_emulation.lock_group_shards(r.groupid);
    END IF;

    LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;

    UPDATE pg_catalog.pg_dist_node n
       SET nodename = v_name, nodeport = v_port
     WHERE n.nodeid = v_id;

    -- Mark the workers' metadata as not synced; the maintenance daemon would sync it after
    -- commit.
    UPDATE pg_catalog.pg_dist_node n
       SET metadatasynced = false
     WHERE n.hasmetadata AND n.metadatasynced AND n.groupid > 0;
    INSERT INTO citus_emulation.pending_metadata_sync (xid)
    VALUES (pg_catalog.txid_current())
    ON CONFLICT (xid) DO NOTHING;
END
$fn$;

CREATE OR REPLACE FUNCTION pg_catalog.citus_remove_node(nodename text, nodeport integer)
RETURNS void
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text := $1;
    v_port integer := $2;
    v_id integer;
BEGIN
    PERFORM citus_emulation.ensure_not_in_recovery();

    LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;

    SELECT n.nodeid INTO v_id FROM pg_catalog.pg_dist_node n
     WHERE n.nodename = v_name AND n.nodeport = v_port;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'XX000',
            MESSAGE = pg_catalog.format('node at "%s:%s" does not exist', v_name, v_port);
    END IF;

    DELETE FROM pg_catalog.pg_dist_node n WHERE n.nodeid = v_id;

    -- Real Citus now propagates the deletion to the (remaining) metadata workers.
    PERFORM citus_emulation.ensure_metadata_synced();
END
$fn$;

CREATE OR REPLACE FUNCTION pg_catalog.citus_set_coordinator_host(
    host text,
    port integer DEFAULT pg_catalog.current_setting('port')::integer,
    node_role pg_catalog.noderole DEFAULT 'primary',
    node_cluster name DEFAULT 'default')
RETURNS void
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text := $1;
    v_port integer := $2;
    v_role pg_catalog.noderole := $3;
    v_cluster name := $4;
    v_id integer;
BEGIN
    PERFORM citus_emulation.ensure_not_in_recovery();

    LOCK TABLE pg_catalog.pg_dist_node IN EXCLUSIVE MODE;

    SELECT n.nodeid INTO v_id FROM pg_catalog.pg_dist_node n
     WHERE n.groupid = 0 AND n.noderole = 'primary'
     ORDER BY n.nodeid
     LIMIT 1;
    IF FOUND THEN
        -- Only the address changes (like Citus, the role and cluster arguments are ignored).
        UPDATE pg_catalog.pg_dist_node n
           SET nodename = v_name, nodeport = v_port
         WHERE n.nodeid = v_id
           AND (n.nodename, n.nodeport) IS DISTINCT FROM (v_name, v_port);
    ELSE
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n
                    WHERE n.nodename = v_name AND n.nodeport = v_port) THEN
            RETURN;  -- Citus' AddNodeMetadata returns early for a known address
        END IF;
        IF v_role = 'primary' AND v_cluster <> 'default' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'XX000',
                MESSAGE = 'primaries must be added to the default cluster';
        END IF;
        v_id := pg_catalog.nextval('pg_catalog.pg_dist_node_nodeid_seq');
        INSERT INTO pg_catalog.pg_dist_node AS n
            (nodeid, groupid, nodename, nodeport, noderack, hasmetadata, isactive, noderole,
             nodecluster, metadatasynced, shouldhaveshards, nodeisclone, nodeprimarynodeid)
        VALUES
            (v_id, 0, v_name, v_port, 'default', true, true, v_role, v_cluster, true, false,
             false, 0);
        IF v_role = 'primary' THEN
            PERFORM citus_emulation.shard_table(0);
        END IF;
    END IF;

    -- Real Citus propagates the coordinator's row to the metadata workers.
    PERFORM citus_emulation.ensure_metadata_synced();
END
$fn$;

CREATE OR REPLACE FUNCTION pg_catalog.citus_pause_node_within_txn(
    node_id integer,
    force boolean DEFAULT false,
    lock_cooldown integer DEFAULT 10000)
RETURNS void
LANGUAGE plpgsql
STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id integer := $1;
    r record;
BEGIN
    SELECT n.groupid, n.noderole INTO r FROM pg_catalog.pg_dist_node n WHERE n.nodeid = v_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'no_data_found',
            MESSAGE = pg_catalog.format('node %s not found',
                                        CASE WHEN v_id < 0 THEN v_id::bigint + 4294967296
                                             ELSE v_id::bigint END);
    END IF;
    IF r.noderole = 'primary' THEN
        PERFORM citus_emulation.lock_group_shards(r.groupid);
    END IF;
END
$fn$;

COMMIT;
