"""pgserver.py - the private PostgreSQL server of tests/lib/pg.sh, for Python test drivers.

    pg = PgServer(os.path.join(workdir, "pg"))   # initdb + start (pg.sh start DIR)
    pg.dsn                                        # "host=127.0.0.1 port=N user=flowd dbname=flowd"
    rows = pg.query("SELECT id, state FROM instances")   # list of tuples of str (None for NULL)
    pg.query("CREATE DATABASE x"); pg.dsn_of("x")         # more databases on the same server
    s = pg.session(); s.query(sql)                # one psql kept open, for poll loops
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

    def psql(self, db="flowd"):
        psql = os.path.join(self.bin, "psql")
        return [psql if os.path.exists(psql) else "psql", "-X", "-q", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", "flowd", "-d", db]

    def dsn_of(self, db):
        return "host=127.0.0.1 port=%d user=flowd dbname=%s" % (self.port, db)

    def query(self, sql, timeout=120, db="flowd"):
        """Rows of one statement as tuples of str; NULL is None. Raises on an SQL error."""
        r = subprocess.run(self.psql(db) + ["--csv", "-v", "ON_ERROR_STOP=1", "-P", "null=\\N",
                                            "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("psql: %s: %s" % (sql, r.stderr.strip()))
        rows = list(csv.reader(io.StringIO(r.stdout)))[1:]  # first row: column names
        return [tuple(None if v == "\\N" else v for v in row) for row in rows]

    def scalar(self, sql):
        rows = self.query(sql)
        return rows[0][0] if rows else None

    def session(self, db="flowd"):
        return PgSession(self.psql(db))

    def stop(self):
        subprocess.run(["bash", PG_SH, "stop", self.dir], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


class PgSession:
    """One psql process kept open (no process start per query): for poll loops. Values must not
    contain tabs or newlines; NULL comes back as an empty string."""

    END = "__pgsession_end__"

    def __init__(self, argv):
        self.p = subprocess.Popen(argv + ["-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=0"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self.END + "\n")
        self.p.stdin.flush()
        rows, error = [], None
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line == self.END:
                if error:
                    raise RuntimeError("psql: %s: %s" % (sql[:200], error))
                return rows
            if line.startswith(("ERROR:", "psql:")):
                error = error or line
            rows.append(tuple(line.split("\t")))
        raise RuntimeError("psql session ended (exit %s)" % self.p.wait())

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)
