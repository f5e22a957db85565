-- CivicQ video answers, a durable job queue, and a storage garbage list
-- (docs/video.md).
--
-- The database is the source of truth for what exists in object storage:
-- every object lives under a prefix named after a row (`uploads/<id>/`,
-- `videos/<id>/`), and a prefix whose row goes away is first written to
-- `storage_gc` in the same transaction, then deleted from storage after
-- commit (again by the maintenance sweep if the process died in between).
-- So no object is ever left without either a row or a pending deletion.

-- One video answer per candidate per question. Its source arrives in chunks
-- (`video_chunks`); then a job turns it into HLS renditions.
CREATE TABLE video_answers (
    id             uuid        PRIMARY KEY,
    question_id    uuid        NOT NULL,
    candidate_id   uuid        NOT NULL REFERENCES users (id),
    -- The ballot profile the candidate answered as (src/civic/ballot.rs).
    profile_id     uuid        REFERENCES candidate_profiles (id),
    -- uploading -> uploaded (queued) -> processing -> ready | failed
    status         text        NOT NULL DEFAULT 'uploading',
    size_bytes     bigint      NOT NULL,
    chunk_bytes    integer     NOT NULL,
    chunk_count    integer     NOT NULL,
    -- What the content sniffing found: mp4 | quicktime | webm.
    container      text,
    duration_ms    integer,
    width          integer,
    height         integer,
    -- Rendition names, highest first: {720p,480p,360p}.
    renditions     text[]      NOT NULL DEFAULT '{}',
    master_key     text,
    poster_key     text,
    failure        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    CONSTRAINT video_answers_one_per_candidate UNIQUE (question_id, candidate_id),
    CONSTRAINT video_answers_status_known
        CHECK (status IN ('uploading', 'uploaded', 'processing', 'ready', 'failed')),
    CONSTRAINT video_answers_size_positive CHECK (size_bytes > 0),
    CONSTRAINT video_answers_chunks_cover_size
        CHECK (chunk_bytes > 0 AND chunk_count = (size_bytes + chunk_bytes - 1) / chunk_bytes),
    CONSTRAINT video_answers_ready_has_urls
        CHECK (status <> 'ready' OR (master_key IS NOT NULL AND poster_key IS NOT NULL))
);

CREATE INDEX video_answers_question ON video_answers (question_id, created_at) WHERE status = 'ready';
CREATE INDEX video_answers_candidate ON video_answers (candidate_id);
-- The sweep of abandoned uploads.
CREATE INDEX video_answers_uploading ON video_answers (updated_at) WHERE status = 'uploading';

-- Chunks received so far. A repeated chunk replaces the earlier copy (same
-- index, same object key); sizes are checked on arrival.
CREATE TABLE video_chunks (
    video_id     uuid        NOT NULL REFERENCES video_answers (id) ON DELETE CASCADE,
    idx          integer     NOT NULL,
    size_bytes   integer     NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (video_id, idx),
    CONSTRAINT video_chunks_idx_nonnegative CHECK (idx >= 0)
);

-- The job queue. Workers claim with FOR UPDATE SKIP LOCKED and hold a lease
-- (lease_until, lease_token) that they renew while working; a job whose lease
-- ran out (its worker died) is claimed again. Completion is fenced by the
-- lease token, so a worker that lost its lease cannot finish the job.
CREATE TABLE jobs (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL,
    payload       jsonb       NOT NULL,
    -- queued -> running -> done | queued (retry, with backoff) | dead
    status        text        NOT NULL DEFAULT 'queued',
    attempts      integer     NOT NULL DEFAULT 0,
    max_attempts  integer     NOT NULL DEFAULT 5,
    run_at        timestamptz NOT NULL DEFAULT now(),
    lease_until   timestamptz,
    lease_token   uuid,
    locked_by     text,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT jobs_status_known CHECK (status IN ('queued', 'running', 'done', 'dead')),
    CONSTRAINT jobs_running_has_lease
        CHECK (status <> 'running' OR (lease_until IS NOT NULL AND lease_token IS NOT NULL)),
    CONSTRAINT jobs_attempts_bounded CHECK (attempts >= 0 AND max_attempts >= 1)
);

-- Claiming: due queued jobs in order; expired leases.
CREATE INDEX jobs_due ON jobs (run_at, id) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE status = 'running';
-- One live job per video: a second enqueue of the same video is a no-op.
CREATE UNIQUE INDEX jobs_one_live_per_subject ON jobs (kind, (payload ->> 'video_id'))
    WHERE status IN ('queued', 'running');
-- Finished jobs are kept for a while for inspection, then pruned by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('done', 'dead');

-- Object-storage prefixes to delete (see the header).
CREATE TABLE storage_gc (
    prefix      text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);
