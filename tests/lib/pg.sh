#!/bin/bash
# pg.sh - a private PostgreSQL server for a test: initdb into a directory, trust auth, 127.0.0.1
# on a free port, fsync off, database and user `flowd`. As root, initdb and postgres run as user
# postgres (they refuse root). One implementation for shell and Python:
#
#   sourced:  . tests/lib/pg.sh
#             pg_find_bin || pg_skip NAME      # SKIP (exit 0) without server binaries, exit 1 if CI
#             pg_start DIR                     # sets PG_DIR PG_PORT PG_DSN; fails the caller's way
#             pg_psql "SELECT ..."             # -Atq output
#             pg_stop                          # immediate shutdown (idempotent)
#   script:   tests/lib/pg.sh start DIR        # prints PG_BIN=, PG_PORT=, PG_DSN= lines; exit 77
#                                              # when there are no server binaries
#             tests/lib/pg.sh stop DIR
# tests/lib/pgserver.py wraps the script form for Python.

# pg_find_bin: sets PG_BIN to the directory holding initdb; returns 1 when there is none.
pg_find_bin() {
    PG_BIN=$(pg_config --bindir 2>/dev/null || true)
    if [ ! -x "$PG_BIN/initdb" ]; then
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    fi
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]
}

# pg_skip NAME: the test cannot run here; SKIP, or fail when CI is set.
pg_skip() {
    echo "SKIP: $1: no PostgreSQL server binaries (install the postgresql package: scripts/install-deps)"
    [ -z "${CI:-}" ] || exit 1
    exit 0
}

pg__die() {
    if declare -F h_fail >/dev/null; then
        h_fail "$*"
    fi
    echo "pg.sh: $*" >&2
    exit 1
}

pg__port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg__as() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_start DIR: initdb in DIR/data, start the server, create database flowd. Sets PG_DIR,
# PG_PORT, PG_DSN. Logs: DIR/initdb.log, DIR/pg_ctl.log, DIR/server.log.
pg_start() {
    PG_DIR=$1
    [ -n "${PG_BIN:-}" ] || pg_find_bin || pg__die "no PostgreSQL server binaries"
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PG_DIR"
        chmod o+x "$(dirname "$PG_DIR")" # traverse only
    fi
    pg__as "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U flowd --no-sync -E UTF8 --locale=C \
        >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        pg__die "initdb in $PG_DIR/data failed"
    }
    local try
    for try in 1 2 3; do # a free port can be taken between the probe and the bind
        PG_PORT=$(pg__port)
        if pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
            -o "-k $PG_DIR -c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off" start \
            >"$PG_DIR/pg_ctl.log" 2>&1; then
            break
        fi
        [ $try -lt 3 ] || {
            cat "$PG_DIR/pg_ctl.log" "$PG_DIR/server.log" >&2
            pg__die "pg_ctl start failed (logs in $PG_DIR)"
        }
    done
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U flowd flowd || pg__die "createdb flowd"
    PG_DSN="host=127.0.0.1 port=$PG_PORT user=flowd dbname=flowd"
}

# pg_stop [DIR]: immediate shutdown; nothing to do when the server is not running.
pg_stop() {
    local dir=${1:-${PG_DIR:-}}
    [ -n "$dir" ] && [ -f "$dir/data/postmaster.pid" ] || return 0
    [ -n "${PG_BIN:-}" ] || pg_find_bin || return 0
    pg__as "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# pg_psql SQL: runs one statement on database flowd, unaligned tuples only.
pg_psql() {
    "$PG_BIN/psql" -X -h 127.0.0.1 -p "$PG_PORT" -U flowd -d flowd -Atqc "$1"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    start)
        [ $# -eq 2 ] || pg__die "usage: pg.sh start DIR"
        pg_find_bin || {
            echo "pg.sh: no PostgreSQL server binaries" >&2
            exit 77
        }
        pg_start "$2"
        printf 'PG_BIN=%s\nPG_PORT=%s\nPG_DSN=%s\n' "$PG_BIN" "$PG_PORT" "$PG_DSN"
        ;;
    stop)
        [ $# -eq 2 ] || pg__die "usage: pg.sh stop DIR"
        pg_stop "$2"
        ;;
    *) pg__die "usage: pg.sh start DIR | pg.sh stop DIR" ;;
    esac
fi
