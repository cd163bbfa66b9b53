//! A real PostgreSQL server for tests: its own cluster in a temp dir, listening on a loopback
//! port from [`crate::free_base_port`] and on a Unix socket in that dir, started and stopped by
//! the test (`stop` and `start` again to test a database that goes away and comes back).
//!
//! The server binaries are Debian's (`/usr/lib/postgresql/N/bin`, the highest N), or those in
//! `DELTAFED_PG_BIN`. PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! `postgres` user and every server command runs as it (`runuser`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    running: bool,
}

/// The directory of `postgres`, `initdb` and `pg_ctl`.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DELTAFED_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server found in /usr/lib/postgresql/*/bin: run scripts/prereqs.sh (apt-get install postgresql) or set DELTAFED_PG_BIN"
        ),
    }
}

impl Postgres {
    /// A new cluster with a `deltafed` superuser (trust authentication on loopback and the
    /// socket) and a `deltafed` database, running.
    pub fn start() -> Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("deltafed-pg-").tempdir().context("creating the cluster dir")?;
        let as_postgres = is_root();
        if as_postgres {
            let st = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status()?;
            if !st.success() {
                bail!("cannot hand {} to the postgres user", dir.path().display());
            }
        }
        let port = crate::free_base_port(1)?;
        let mut pg = Postgres { bin, dir, port, as_postgres, running: false };
        let data = pg.data_dir();
        let out = pg
            .server_cmd("initdb")?
            .args(["-D"])
            .arg(&data)
            .args(["-U", "deltafed", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
            .output()
            .context("running initdb")?;
        check(&out, "initdb")?;
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 100\n",
                pg.dir.path().display()
            ),
        )
        .context("writing the cluster's settings")?;
        pg.start_again()?;
        pg.psql("postgres", "CREATE DATABASE deltafed")?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn server_cmd(&self, tool: &str) -> Result<Command> {
        let exe = self.bin.join(tool);
        Ok(if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        })
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_again(&mut self) -> Result<()> {
        let log = self.dir.path().join("server.log");
        let out = self
            .server_cmd("pg_ctl")?
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("pg_ctl start failed: {}\n{server_log}", String::from_utf8_lossy(&out.stderr));
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server at once (`-m immediate`: connections drop as in a crash).
    pub fn stop(&mut self) -> Result<()> {
        let out = self
            .server_cmd("pg_ctl")?
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        check(&out, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://deltafed@127.0.0.1:PORT/deltafed`.
    pub fn url(&self) -> String {
        format!("postgresql://deltafed@127.0.0.1:{}/deltafed", self.port)
    }

    /// Runs SQL in database `db` through psql and returns what it printed (unaligned, tuples
    /// only), failing on the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let psql = self.bin.join("psql");
        let out = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "deltafed", "-d", db, "-c", sql])
            .output()
            .context("running psql")?;
        check(&out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs SQL in the `deltafed` database.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.psql("deltafed", sql)
    }

    /// Waits until `cond` holds on the server, polling.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.stop();
        }
    }
}

fn check(out: &Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

fn is_root() -> bool {
    // The uid that owns a file this process creates is its effective uid.
    use std::os::unix::fs::MetadataExt;
    let probe = std::env::temp_dir();
    tempfile::tempfile_in(&probe).ok().and_then(|f| f.metadata().ok()).is_some_and(|m| m.uid() == 0)
}
