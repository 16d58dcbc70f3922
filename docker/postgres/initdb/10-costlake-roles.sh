#!/usr/bin/env bash
# First-start init script of the compose stack's Postgres (docker-entrypoint-initdb.d): creates Costlake's
# owner role (migrations, loads) and the read-only role `costlake_reader` (pages, agent) with their passwords.
# The image runs it once, on an empty data volume; docs/production-stack.md says how to rotate passwords later.
set -euo pipefail

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${POSTGRES_OWNER_USER:?}" "${POSTGRES_OWNER_PASSWORD:?}" "${DATABASE_READONLY_PASSWORD:?}"

# The reader's name is fixed by the mart (backend/mart/db.py READER_ROLE); its migration grants it SELECT.
reader=costlake_reader

# Values travel as psql variables and are quoted by format(%I/%L) server-side: no password in a command
# line of the server's, no hand-made quoting.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" \
  -v owner="$POSTGRES_OWNER_USER" -v owner_password="$POSTGRES_OWNER_PASSWORD" \
  -v reader="$reader" -v reader_password="$DATABASE_READONLY_PASSWORD" <<'SQL'
-- Owner: not a superuser. CREATEROLE only because the mart's migration and bootstrap adjust the reader
-- (role defaults, password); since PostgreSQL 16 that reaches only roles it holds ADMIN on (granted below).
SELECT format('CREATE ROLE %I', :'owner') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'owner', :'owner_password')
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner')
\gexec

-- Reader: created here with its password so it can log in over TCP (scram) from the first start; the
-- migration finds it existing and only grants.
SELECT format('CREATE ROLE %I', :'reader') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'reader', :'reader_password')
\gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'reader')
\gexec
-- ADMIN lets the owner manage the reader; INHERIT/SET FALSE: the owner never acts with the reader's rights.
SELECT format('GRANT %I TO %I WITH ADMIN TRUE, INHERIT FALSE, SET FALSE', :'reader', :'owner')
\gexec

-- Only Costlake's roles may connect to Costlake's database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'reader')
\gexec
SQL

echo "costlake: roles ${POSTGRES_OWNER_USER} (owner of ${POSTGRES_DB}) and ${reader} (read-only) ready"
