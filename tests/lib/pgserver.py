"""pgserver.py - the private PostgreSQL server of tests/lib/pg.sh, for Python test drivers.

    pg = PgServer(os.path.join(workdir, "pg"))   # initdb + start (pg.sh start DIR)
    pg.dsn                                        # "host=127.0.0.1 port=N user=flowd dbname=flowd"
    rows = pg.query("SELECT id, state FROM instances")   # list of tuples of str (None for NULL)
    pg.stop()                                     # pg.sh stop DIR

Raises PgUnavailable when the server binaries are not installed. Standard library only; the
queries go through psql (CSV output).
"""

import csv
import io
import os
import subprocess

PG_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pg.sh")


class PgUnavailable(Exception):
    pass


class PgServer:
    def __init__(self, directory):
        self.dir = directory
        r = subprocess.run(["bash", PG_SH, "start", directory], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode == 77:
            raise PgUnavailable(r.stderr.strip())
        if r.returncode != 0:
            raise RuntimeError("pg.sh start %s failed: %s" % (directory, r.stderr.strip()[-2000:]))
        env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        self.bin, self.port, self.dsn = env["PG_BIN"], int(env["PG_PORT"]), env["PG_DSN"]

    def query(self, sql, timeout=120):
        """Rows of one statement as tuples of str; NULL is None. Raises on an SQL error."""
        psql = os.path.join(self.bin, "psql")
        r = subprocess.run([psql if os.path.exists(psql) else "psql", "-X", "-q", "--csv",
                            "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "flowd", "-d", "flowd",
                            "-P", "null=\\N", "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (sql, r.stderr.strip()))
        rows = list(csv.reader(io.StringIO(r.stdout)))[1:]  # first row: column names
        return [tuple(None if v == "\\N" else v for v in row) for row in rows]

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def stop(self):
        subprocess.run(["bash", PG_SH, "stop", self.dir], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
