-- Cities: the public, read-mostly catalogue CivicQ questions hang off.
-- Ids are identity bigints: small, index-friendly, and safe to expose because
-- cities are public data. Keyset pagination walks them by (name, id).
CREATE TABLE cities (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        text        NOT NULL,
    name        text        NOT NULL,
    region      text        NOT NULL,
    country     char(2)     NOT NULL,
    timezone    text        NOT NULL,
    population  integer     CHECK (population IS NULL OR population >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cities_slug_key UNIQUE (slug),
    CONSTRAINT cities_slug_format CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    CONSTRAINT cities_country_format CHECK (country ~ '^[A-Z]{2}$')
);

-- The list endpoint orders by name then id; this index serves both the order
-- and the keyset predicate (name, id) > ($1, $2) without a sort.
CREATE INDEX cities_name_id_idx ON cities (name, id);
