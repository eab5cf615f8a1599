//! The database schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to `i + 1`; each runs in its own
//! transaction together with the `user_version` bump, so a crash mid-migration leaves the
//! previous version intact. Tables are `STRICT`, so a value of the wrong type is refused by
//! SQLite itself.

/// The schema version this code writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// `PRAGMA application_id` of a Tessera database ("TESS").
pub(crate) const APPLICATION_ID: i64 = 0x5445_5353;

/// Version 1: jobs, their transitions, allocations, the reconfiguration journal, metadata.
/// Public (hidden) so that tests build a version-1 file from exactly this text.
pub const V1: &str = r"
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_uid         INTEGER NOT NULL,
    user_name        TEXT    NOT NULL,
    tenant           TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    request          TEXT    NOT NULL,
    command          TEXT    NOT NULL,
    env              TEXT    NOT NULL,
    cwd              TEXT    NOT NULL,
    submitted_ms     INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'placing', 'running',
                         'succeeded', 'failed', 'cancelled', 'timed_out', 'lost')),
    reason           TEXT    NOT NULL DEFAULT '',
    started_ms       INTEGER,
    ended_ms         INTEGER,
    exit_code        INTEGER,
    exit_signal      INTEGER,
    exit_failed_rank INTEGER,
    exit_detail      TEXT,
    job_dir          TEXT,
    shim_pid         INTEGER,
    CHECK (exit_detail IS NOT NULL
           OR (exit_code IS NULL AND exit_signal IS NULL AND exit_failed_rank IS NULL))
) STRICT;
CREATE INDEX jobs_by_state  ON jobs (state, id);
CREATE INDEX jobs_by_user   ON jobs (user_uid, id);
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);

CREATE TABLE job_events (
    id         INTEGER PRIMARY KEY,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    from_state TEXT    NOT NULL,
    to_state   TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL
) STRICT;
CREATE INDEX job_events_by_job ON job_events (job_id, id);

CREATE TABLE allocations (
    id                  INTEGER PRIMARY KEY,
    job_id              INTEGER NOT NULL REFERENCES jobs (id),
    rank                INTEGER NOT NULL,
    gpu_uuid            TEXT    NOT NULL,
    gpu_index           INTEGER NOT NULL,
    profile_id          INTEGER NOT NULL,
    start               INTEGER NOT NULL,
    gpu_instance_id     INTEGER,
    compute_instance_id INTEGER,
    mig_uuid            TEXT,
    exclusive           INTEGER NOT NULL CHECK (exclusive IN (0, 1)),
    allocated_ms        INTEGER NOT NULL,
    released_at         INTEGER
) STRICT;
-- At most one live exclusive allocation per slice.
CREATE UNIQUE INDEX allocations_live_exclusive ON allocations (gpu_uuid, profile_id, start)
    WHERE released_at IS NULL AND exclusive = 1;
-- At most one live allocation per rank.
CREATE UNIQUE INDEX allocations_live_rank ON allocations (job_id, rank)
    WHERE released_at IS NULL;
CREATE INDEX allocations_live_slice ON allocations (gpu_uuid, profile_id, start)
    WHERE released_at IS NULL;
CREATE INDEX allocations_by_job ON allocations (job_id, rank);
-- Backstop for what a unique index cannot say: a shared allocation never meets an exclusive
-- one. The store checks this itself first, to name the holder.
CREATE TRIGGER allocations_no_conflict BEFORE INSERT ON allocations
WHEN NEW.released_at IS NULL AND EXISTS (
    SELECT 1 FROM allocations AS a
    WHERE a.released_at IS NULL AND a.gpu_uuid = NEW.gpu_uuid
      AND a.profile_id = NEW.profile_id AND a.start = NEW.start
      AND (a.exclusive = 1 OR NEW.exclusive = 1))
BEGIN
    SELECT RAISE(ABORT, 'slice already allocated');
END;
-- A released allocation stays released, and a slice's spec key never changes.
CREATE TRIGGER allocations_no_revive BEFORE UPDATE OF released_at ON allocations
WHEN OLD.released_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'allocation already released');
END;
CREATE TRIGGER allocations_key_fixed
BEFORE UPDATE OF job_id, rank, gpu_uuid, profile_id, start, exclusive ON allocations
BEGIN
    SELECT RAISE(ABORT, 'an allocation''s job, rank and slice cannot change');
END;

CREATE TABLE reconfigs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    gpu_uuid       TEXT    NOT NULL,
    gpu_index      INTEGER NOT NULL,
    plan           TEXT    NOT NULL,
    for_job        INTEGER REFERENCES jobs (id),
    state          TEXT    NOT NULL CHECK (state IN ('open', 'finished')),
    created_ms     INTEGER NOT NULL,
    finished_ms    INTEGER,
    outcome        TEXT    CHECK (outcome IN ('completed', 'rolled_back', 'abandoned')),
    outcome_detail TEXT,
    CHECK ((state = 'open') = (outcome IS NULL)),
    CHECK ((state = 'open') = (finished_ms IS NULL))
) STRICT;
-- At most one open reconfiguration per GPU.
CREATE UNIQUE INDEX reconfigs_open_per_gpu ON reconfigs (gpu_uuid) WHERE state = 'open';

CREATE TABLE reconfig_steps (
    reconfig_id INTEGER NOT NULL REFERENCES reconfigs (id),
    step_index  INTEGER NOT NULL,
    done_at     INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    PRIMARY KEY (reconfig_id, step_index)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
";

/// Version 2: a job's work typed (processes, or work another system runs), its run count
/// (counted from its transitions to `placing`) and the `oom_killed` state (the jobs table is
/// rebuilt for the new CHECK, with foreign keys off around the migration, as SQLite's
/// documented procedure says; its id high-water mark carried over even with no rows); each
/// allocation's run, place in its rank, NUMA node and host CPUs and memory, and a key trigger
/// that covers them; drains and MPS control daemons kept across restarts.
///
/// Version 1 kept a rank's flat slot in `rank`, which version 2 would misread: the store refuses
/// to migrate a file with live allocations (`StoreError::LiveAllocationsAtUpgrade`), so every
/// allocation migrated here is released history.
const V2: &str = r"
CREATE TABLE jobs_v2 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_uid         INTEGER NOT NULL,
    user_name        TEXT    NOT NULL,
    tenant           TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    request          TEXT    NOT NULL,
    work             TEXT    NOT NULL,
    submitted_ms     INTEGER NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'placing', 'running',
                         'succeeded', 'failed', 'cancelled', 'timed_out', 'oom_killed', 'lost')),
    reason           TEXT    NOT NULL DEFAULT '',
    started_ms       INTEGER,
    ended_ms         INTEGER,
    exit_code        INTEGER,
    exit_signal      INTEGER,
    exit_failed_rank INTEGER,
    exit_detail      TEXT,
    job_dir          TEXT,
    shim_pid         INTEGER,
    runs             INTEGER NOT NULL DEFAULT 0,
    CHECK (exit_detail IS NOT NULL
           OR (exit_code IS NULL AND exit_signal IS NULL AND exit_failed_rank IS NULL))
) STRICT;
INSERT INTO jobs_v2 (id, user_uid, user_name, tenant, priority, request, work, submitted_ms, state,
                     reason, started_ms, ended_ms, exit_code, exit_signal, exit_failed_rank,
                     exit_detail, job_dir, shim_pid, runs)
SELECT id, user_uid, user_name, tenant, priority, request,
       json_object('process', json_object('command', json(command), 'env', json(env), 'cwd', cwd)),
       submitted_ms, state, reason, started_ms, ended_ms, exit_code, exit_signal,
       exit_failed_rank, exit_detail, job_dir, shim_pid,
       (SELECT count(*) FROM job_events AS e WHERE e.job_id = jobs.id AND e.to_state = 'placing')
FROM jobs;
-- The id high-water mark, also when no job is left: jobs_v2's sequence row is made here rather
-- than left to what an INSERT of no rows happens to do.
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'jobs_v2', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs_v2');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT max(seq) FROM sqlite_sequence WHERE name = 'jobs'), 0))
    WHERE name = 'jobs_v2';
DROP TABLE jobs;
ALTER TABLE jobs_v2 RENAME TO jobs;
CREATE INDEX jobs_by_state  ON jobs (state, id, submitted_ms);
CREATE INDEX jobs_by_user   ON jobs (user_uid, id);
CREATE INDEX jobs_by_tenant ON jobs (tenant, id);

ALTER TABLE allocations ADD COLUMN slice INTEGER NOT NULL DEFAULT 0;
ALTER TABLE allocations ADD COLUMN numa_node INTEGER;
ALTER TABLE allocations ADD COLUMN host TEXT NOT NULL DEFAULT '[]';
-- The job's run (`jobs.runs` when allocated): the placements to `placing` made by the time of
-- the allocation, between 1 and the job's runs.
ALTER TABLE allocations ADD COLUMN run INTEGER NOT NULL DEFAULT 1;
UPDATE allocations SET run = max(1, min(
    coalesce((SELECT runs FROM jobs WHERE jobs.id = allocations.job_id), 1),
    (SELECT count(*) FROM job_events AS e
     WHERE e.job_id = allocations.job_id AND e.to_state = 'placing' AND e.at_ms <= allocations.allocated_ms)));
DROP TRIGGER allocations_key_fixed;
CREATE TRIGGER allocations_key_fixed
BEFORE UPDATE OF job_id, run, rank, slice, gpu_uuid, profile_id, start, exclusive ON allocations
BEGIN
    SELECT RAISE(ABORT, 'an allocation''s job, run, rank, slice and slice key cannot change');
END;
DROP INDEX allocations_live_rank;
-- At most one live allocation per slice of a rank.
CREATE UNIQUE INDEX allocations_live_slot ON allocations (job_id, rank, slice)
    WHERE released_at IS NULL;

CREATE TABLE drains (
    gpu_uuid   TEXT    NOT NULL PRIMARY KEY,
    gpu_index  INTEGER NOT NULL,
    by_user    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE mps_servers (
    mig_uuid   TEXT    NOT NULL PRIMARY KEY,
    uid        INTEGER NOT NULL,
    gid        INTEGER NOT NULL,
    pipe_dir   TEXT    NOT NULL,
    log_dir    TEXT    NOT NULL,
    started_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
";

/// Version 3: who asked for a job's cancellation (the first to ask; kept when the supervisor
/// records the end later).
pub const V3: &str = r"
ALTER TABLE jobs ADD COLUMN cancelled_by TEXT;
";

/// Version 4: the metrics' totals of what pruning deleted (`totals.rs`), so that counters and
/// histograms built from history never go down. One row per series: the metric, its label
/// values (a JSON array), the number of observations (a counter's value), their sum in ms and,
/// for a histogram, the observations per bucket (a JSON object: upper bound in ms → count, not
/// cumulative; `18446744073709551615`, `u64::MAX`, is the `+Inf` bucket).
pub const V4: &str = r"
CREATE TABLE metric_totals (
    metric  TEXT    NOT NULL,
    labels  TEXT    NOT NULL,
    count   INTEGER NOT NULL CHECK (count >= 0),
    sum_ms  INTEGER NOT NULL CHECK (sum_ms >= 0),
    buckets TEXT    NOT NULL,
    PRIMARY KEY (metric, labels)
) STRICT, WITHOUT ROWID;
";

/// `MIGRATIONS[i]` migrates version `i` to `i + 1`.
pub(crate) const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3, V4];
