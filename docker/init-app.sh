#!/bin/bash
# The app's role (no superuser: row security must apply to it during a move), its database and
# the demo schema owned by it — as `shardgate demo` sets them up (src/demo.rs, SCHEMA). Order ids
# are odd on s0 and even on s1 (FIRST_ORDER_ID), so they never collide.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username postgres <<SQL
CREATE ROLE app LOGIN PASSWORD 'demo';
CREATE DATABASE app OWNER app;
SQL
if [ "${CONTROL_DATABASE:-}" = "yes" ]; then
  psql -v ON_ERROR_STOP=1 --username postgres -c "CREATE DATABASE shardgate OWNER app"
fi
psql -v ON_ERROR_STOP=1 --username postgres --dbname app <<SQL
SET ROLE app;
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users, total numeric(10,2) NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
ALTER SEQUENCE orders_id_seq INCREMENT BY 2 RESTART WITH ${FIRST_ORDER_ID};
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
INSERT INTO countries VALUES ('FR', 'France'), ('JP', 'Japan'), ('BR', 'Brazil'), ('US', 'United States');
SQL
