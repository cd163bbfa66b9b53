//! A harness for multi-node tests: a federation of real `deltafed run` processes on loopback,
//! made with `deltafed testnet init`, driven through the same CLI a user types.
//!
//! Nothing here sleeps in place of a condition: [`Federation::wait_for`] polls a condition
//! (usually a `--json` command) until it holds or a deadline passes, and says what it waited for.

pub mod bench;
pub mod link;
pub mod peer;
pub mod postgres;

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The `deltafed` binary of this build, unless `DELTAFED_BIN` names another.
///
/// `cargo test -p deltafed-testnet` does not rebuild the binary (it belongs to another
/// package), so a binary older than any source it is built from is refused, with what to run:
/// a stale one would be tested in place of the code.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DELTAFED_BIN") {
        return PathBuf::from(p);
    }
    // A binary of this build sits beside `deltafed`; a test executable one level down, in deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    let here = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let sibling = here.join("deltafed");
    let bin = if sibling.exists() {
        sibling
    } else {
        here.parent().map(Path::to_path_buf).unwrap_or_default().join("deltafed")
    };
    static FRESH: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Err(why) = FRESH.get_or_init(|| fresh(&bin)) {
        panic!("{why}");
    }
    bin
}

/// Whether `bin` is newer than every Rust source of the crates it is built from (only `.rs`
/// files: cargo rebuilds for each of those, so a binary older than one is stale for certain).
fn fresh(bin: &Path) -> Result<(), String> {
    let rebuild = "run `cargo build --workspace --all-targets` (or `cargo test --workspace`) first";
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .map_err(|e| format!("the deltafed binary {} is not there ({e}): {rebuild}", bin.display()))?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut look = |p: PathBuf| {
        if let Ok(t) = std::fs::metadata(&p).and_then(|m| m.modified())
            && newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            newest = Some((t, p));
        }
    };
    for krate in ["protocol", "node", "cli"] {
        let mut dirs = vec![root.join(krate).join("src")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    look(p);
                }
            }
        }
    }
    match newest {
        Some((t, p)) if t > built => Err(format!(
            "the deltafed binary {} is older than {}: it was not rebuilt after that change, and the tests would run the old code; {rebuild}",
            bin.display(),
            p.display()
        )),
        _ => Ok(()),
    }
}

/// A base port P such that P..P+n are free on 127.0.0.1 for both TCP and UDP (QUIC), reserved
/// for this process until it exits. Ports come from below the kernel's ephemeral range (so no
/// socket the kernel numbers can take them between our check and the node's bind), in blocks of
/// 16, each held by an flock on a file in the temp dir: test processes running side by side
/// never hand out the same block.
pub fn free_base_port(n: u16) -> Result<u16> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    const BLOCK: u16 = 16;
    const LOW: u16 = 10_000;
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    if n == 0 || n > BLOCK {
        bail!("free_base_port hands out 1..={BLOCK} ports at once, not {n}");
    }
    let high = ephemeral_low().clamp(LOW + 4 * BLOCK, 32_768);
    let blocks = u32::from((high - LOW) / BLOCK);
    let dir = std::env::temp_dir().join("deltafed-test-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if CURSOR.load(Ordering::Relaxed) == 0 {
        let start = std::process::id().wrapping_mul(2_654_435_761) % blocks;
        let _ = CURSOR.compare_exchange(0, start.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..blocks {
        let block = CURSOR.fetch_add(1, Ordering::Relaxed) % blocks;
        let base = LOW + u16::try_from(block)? * BLOCK;
        let path = dir.join(format!("{base}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            continue; // another test process holds this block
        }
        let free = (0..n).all(|i| {
            let p = base + i;
            TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(file);
            return Ok(base);
        }
    }
    bail!("no block of {n} free ports found on 127.0.0.1 below {high}")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

pub struct Federation {
    dir: tempfile::TempDir,
    members: Vec<String>,
    base_port: u16,
    nodes: HashMap<String, Child>,
    bin: PathBuf,
    /// Set when a wait fails, so the logs are shown even if the test returns an error.
    failed: bool,
    /// Members whose node runs inside a network namespace (`ip netns exec NS`).
    netns: HashMap<String, String>,
}

impl Federation {
    /// `deltafed testnet init` for `members`; no node is started yet.
    pub fn init(members: &[&str]) -> Result<Federation> {
        Self::init_on(members, &[])
    }

    /// [`Federation::init`] with member i at `hosts[i]` (`--hosts`); none: all on 127.0.0.1.
    pub fn init_on(members: &[&str], hosts: &[&str]) -> Result<Federation> {
        let bin = binary();
        if !bin.exists() {
            bail!("{} does not exist; build it first with `cargo build -p deltafed`", bin.display());
        }
        let dir = tempfile::tempdir()?;
        let base_port = free_base_port(u16::try_from(members.len())?)?;
        let fed = Federation {
            dir,
            members: members.iter().map(ToString::to_string).collect(),
            base_port,
            nodes: HashMap::new(),
            bin,
            failed: false,
            netns: HashMap::new(),
        };
        let net = fed.dir.path().join("net");
        let list = members.join(",");
        let port = base_port.to_string();
        let hosts = hosts.join(",");
        let mut args = vec!["testnet", "init", "--dir", path_str(&net)?, "--members", &list, "--base-port", &port];
        if !hosts.is_empty() {
            args.extend(["--hosts", &hosts]);
        }
        fed.run_ok(&args)?;
        Ok(fed)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    pub fn data_dir(&self, member: &str) -> PathBuf {
        self.dir.path().join("net").join(member)
    }

    pub fn roster_file(&self) -> PathBuf {
        self.dir.path().join("net").join("roster.cbor")
    }

    fn log_file(&self, member: &str) -> PathBuf {
        self.dir.path().join(format!("{member}.log"))
    }

    /// Runs `deltafed ARGS` and returns its output, whatever the exit code.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin).args(args).env_remove("DELTAFED_DATA_DIR").output().context("cannot run deltafed")
    }

    fn run_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.run(args)?;
        if !out.status.success() {
            bail!("deltafed {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }

    /// `deltafed ARGS --data-dir DIR(member)`.
    pub fn cli(&self, member: &str, args: &[&str]) -> Result<Output> {
        let dir = self.data_dir(member);
        let mut all = args.to_vec();
        all.extend(["--data-dir", path_str(&dir)?]);
        self.run(&all)
    }

    /// `deltafed ARGS --json --data-dir DIR(member)`, which must succeed and print JSON.
    pub fn json(&self, member: &str, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(member, &all)?;
        if !out.status.success() {
            bail!("{member}: deltafed {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("{member}: deltafed {args:?} printed no JSON"))
    }

    /// Sets a top-level line in a member's `deltafed.toml` (before it starts), e.g.
    /// `serve_rate_limit = 1000`. A setting given again replaces the one `init` wrote.
    pub fn configure(&self, member: &str, line: &str) -> Result<()> {
        self.configure_in(member, None, line)
    }

    /// Sets `line` inside `[table]` of a member's `deltafed.toml` (before it starts), e.g.
    /// `configure_in("zhejiang", Some("gateway"), "listen = \"0.0.0.0:0\"")`; `None` is the top
    /// level. A setting given again replaces the one there.
    pub fn configure_in(&self, member: &str, table: Option<&str>, line: &str) -> Result<()> {
        let path = self.data_dir(member).join("deltafed.toml");
        let key = line.split('=').next().unwrap_or_default().trim().to_string();
        let text = std::fs::read_to_string(&path)?;
        let mut out: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        let mut placed = false;
        let want = table.map(str::to_string);
        for l in text.lines() {
            let t = l.trim();
            if t.starts_with('[') {
                // Leaving the wanted table: the line goes at its end.
                if current == want && !placed {
                    out.push(line.to_string());
                    placed = true;
                }
                current = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            } else if current == want && t.split('=').next().unwrap_or_default().trim() == key {
                continue;
            }
            out.push(l.to_string());
        }
        if !placed {
            if current == want {
                out.push(line.to_string());
            } else if let Some(t) = table {
                out.push(format!("[{t}]"));
                out.push(line.to_string());
            } else {
                bail!("{} has no top level to add {line:?} to", path.display());
            }
        }
        std::fs::write(&path, out.join("\n") + "\n")?;
        Ok(())
    }

    /// Removes a one-line top-level setting from a member's `deltafed.toml` (before it starts),
    /// so the built-in default applies; `init` writes every setting out.
    pub fn unconfigure(&self, member: &str, key: &str) -> Result<()> {
        let path = self.data_dir(member).join("deltafed.toml");
        let text = std::fs::read_to_string(&path)?;
        // Only the top level, before the first [table] (`listen` is also a gateway key).
        let mut top = true;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                top &= !l.trim().starts_with('[');
                !top || l.split('=').next().unwrap_or_default().trim() != key
            })
            .collect();
        if kept.len() == text.lines().count() {
            bail!("{} has no setting {key}", path.display());
        }
        std::fs::write(&path, kept.join("\n") + "\n")?;
        Ok(())
    }

    /// Starts `deltafed ARGS --data-dir DIR(member)` without waiting for it (a long fetch).
    pub fn spawn_cli(&self, member: &str, args: &[&str]) -> Result<Child> {
        let mut all = args.to_vec();
        let dir = self.data_dir(member);
        all.extend(["--data-dir", path_str(&dir)?]);
        Command::new(&self.bin)
            .args(&all)
            .env_remove("DELTAFED_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run deltafed")
    }

    /// The process id of a running member (to pause it with SIGSTOP, say).
    /// Runs `member`'s node inside network namespace `ns` from its next start (its admin socket
    /// is a file, so the CLI reaches it from here).
    pub fn set_netns(&mut self, member: &str, ns: &str) {
        self.netns.insert(member.to_string(), ns.to_string());
    }

    pub fn pid(&self, member: &str) -> Option<u32> {
        self.nodes.get(member).map(Child::id)
    }

    /// Starts `deltafed run` for `member` and waits until its admin socket answers.
    pub fn start(&mut self, member: &str) -> Result<()> {
        self.start_with_env(member, &[])
    }

    /// [`Federation::start`] with these environment variables set for the node. The test
    /// process's own `DELTAFED_LISTEN` and `DELTAFED_LOG_FORMAT` never reach a node: only the
    /// data dir's config and what is given here apply.
    pub fn start_with_env(&mut self, member: &str, env: &[(&str, &str)]) -> Result<()> {
        self.start_with(member, env, &[])
    }

    /// [`Federation::start_with_env`] with these flags given to `deltafed run` as well.
    pub fn start_with(&mut self, member: &str, env: &[(&str, &str)], flags: &[&str]) -> Result<()> {
        if self.nodes.contains_key(member) {
            bail!("{member} is already running");
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_file(member))?;
        // `ip netns exec` execs the node, so the child's pid is the node's.
        let mut cmd = match self.netns.get(member) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .args(["run", "--data-dir", path_str(&self.data_dir(member))?])
            .args(flags)
            .env("DELTAFED_LOG", "info,deltafed_node=debug,libp2p_gossipsub=warn,libp2p_swarm=warn")
            .env_remove("DELTAFED_LISTEN")
            .env_remove("DELTAFED_GATEWAY_LISTEN")
            .env_remove("DELTAFED_METRICS_LISTEN")
            .env_remove("DELTAFED_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start deltafed run")?;
        self.nodes.insert(member.to_string(), child);
        self.wait_for(&format!("{member} to answer on its admin socket"), Duration::from_secs(20), |f| {
            if let Some(status) = f.exited(member)? {
                bail!("{member} exited during start-up with {status}: {}", f.log_tail(member, 15));
            }
            Ok(f.cli(member, &["status", "--json"])?.status.success())
        })
    }

    /// Runs `deltafed run` for `member`, which must refuse to start: returns what it said on
    /// stderr. Fails if the node is still running after `timeout` (it is killed then).
    pub fn start_refused(&self, member: &str, timeout: Duration) -> Result<String> {
        let mut child = Command::new(&self.bin)
            .args(["run", "--data-dir", path_str(&self.data_dir(member))?])
            .env_remove("DELTAFED_LISTEN")
            .env_remove("DELTAFED_GATEWAY_LISTEN")
            .env_remove("DELTAFED_METRICS_LISTEN")
            .env_remove("DELTAFED_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start deltafed run")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err)?;
                }
                if status.success() {
                    bail!("{member} exited 0 instead of refusing to start: {err}");
                }
                return Ok(err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{member} was still running {timeout:?} after it was started; it should have refused");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts every member except `skip` (a member played by a test peer).
    pub fn start_all_but(&mut self, skip: &str) -> Result<()> {
        for m in self.members.clone() {
            if m != skip {
                self.start(&m)?;
            }
        }
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        for m in self.members.clone() {
            self.start(&m)?;
        }
        Ok(())
    }

    /// The exit status if the member's process has ended.
    pub fn exited(&mut self, member: &str) -> Result<Option<std::process::ExitStatus>> {
        match self.nodes.get_mut(member) {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 15 s).
    pub fn stop(&mut self, member: &str) -> Result<std::process::ExitStatus> {
        let mut child = self.nodes.remove(member).with_context(|| format!("{member} is not running"))?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{member} did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a crash, no clean shutdown.
    pub fn kill(&mut self, member: &str) -> Result<()> {
        let mut child = self.nodes.remove(member).with_context(|| format!("{member} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Polls `cond` every 50 ms until it returns true; fails after `timeout` naming `what`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&mut Self) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_err = None;
        loop {
            match cond(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                self.failed = true;
                let why = last_err.map(|e| format!(" (last error: {e:#})")).unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}{why}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member ids `member` reports as connected.
    pub fn connected(&self, member: &str) -> Result<Vec<String>> {
        let s = self.json(member, &["status"])?;
        Ok(s["connected"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default())
    }

    /// Waits until each listed member is connected to all the others in the list.
    pub fn wait_mesh(&mut self, members: &[&str], timeout: Duration) -> Result<()> {
        let want: Vec<String> = members.iter().map(ToString::to_string).collect();
        self.wait_for(&format!("{members:?} to be fully connected"), timeout, |f| {
            for m in &want {
                let c = f.connected(m)?;
                if !want.iter().filter(|o| *o != m).all(|o| c.contains(o)) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// `catalog --json` of a member, as `publisher/dataset@version` strings.
    pub fn catalog(&self, member: &str) -> Result<Vec<String>> {
        let v = self.json(member, &["catalog"])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        format!(
                            "{}/{}@{}",
                            i["publisher"].as_str().unwrap_or("?"),
                            i["dataset"].as_str().unwrap_or("?"),
                            i["version"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Where a running member's gateway listens (`status --json`'s `gateway_url`).
    pub fn gateway_url(&self, member: &str) -> Result<String> {
        let s = self.json(member, &["status"])?;
        s["gateway_url"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{member}: status has no gateway_url: {s}"))
    }

    /// Where a running member serves `/metrics`, `/healthz` and `/readyz` (`status --json`'s
    /// `metrics_url`).
    pub fn metrics_url(&self, member: &str) -> Result<String> {
        let s = self.json(member, &["status"])?;
        s["metrics_url"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{member}: status has no metrics_url: {s}"))
    }

    pub fn dashboard_url(&self, member: &str) -> Result<String> {
        let s = self.json(member, &["status"])?;
        s["dashboard_url"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{member}: status has no dashboard_url: {s}"))
    }

    /// The last lines of a member's log, for failure messages.
    pub fn log_tail(&self, member: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_file(member)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole log of a member.
    pub fn log(&self, member: &str) -> String {
        std::fs::read_to_string(self.log_file(member)).unwrap_or_default()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for (_, mut child) in self.nodes.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.failed || std::thread::panicking() {
            for m in &self.members {
                eprintln!("---- log of {m} (last 40 lines) ----\n{}", self.log_tail(m, 40));
            }
        }
    }
}

pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}
