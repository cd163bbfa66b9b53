//! An emulated inter-province link: two network namespaces, one for each end, joined by a
//! relay that holds every packet for half the round trip, with the rate capped by `tbf` on both
//! ends. The kernel here has no `netem`, so the delay is done in user space: each end's only
//! route to the other is a TUN device whose packets this process reads, keeps until they are
//! due, and writes into the other end's TUN device. TCP between the ends is end to end (the relay
//! is a wire, not a proxy), so its windows must cover the bandwidth-delay product as they would
//! between two cities. Needs root (namespaces, TUN devices, `tc`) and `ip`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The address of end A (the requester's side in the benchmark).
pub const A_IP: &str = "10.201.0.1";
/// The address of end B.
pub const B_IP: &str = "10.201.0.2";
const MTU: u16 = 9000;
/// Packets held by the relay in one direction at most; past it new ones are dropped, as a router
/// with a full queue does (1 Gbit/s for 10 ms is about 140 packets of 9000 bytes).
const QUEUE: usize = 16 * 1024;
/// The TUN device's name in each end's namespace.
const DEV: &str = "dfl0";

/// One end of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    A,
    B,
}

/// A running emulated link; dropping it stops the relay and deletes the namespaces.
pub struct Link {
    prefix: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let o = Command::new(cmd).args(args).output().with_context(|| format!("cannot run {cmd}"))?;
    if !o.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

impl Link {
    /// Builds the link: `rtt` round trip (half each way), `mbit` Mbit/s each way.
    pub fn new(rtt: Duration, mbit: u32) -> Result<Link> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!("dfl{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let mut link = Link {
            prefix,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        link.build(rtt / 2, mbit).context("cannot build the emulated link (needs root, ip, ethtool and tc)")?;
        Ok(link)
    }

    /// The network namespace of an end.
    pub fn netns(&self, end: End) -> String {
        match end {
            End::A => format!("{}a", self.prefix),
            End::B => format!("{}b", self.prefix),
        }
    }

    pub fn addr(end: End) -> &'static str {
        match end {
            End::A => A_IP,
            End::B => B_IP,
        }
    }

    /// Packets the relay dropped because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn build(&mut self, delay: Duration, mbit: u32) -> Result<()> {
        for end in [End::A, End::B] {
            ip(&["netns", "add", &self.netns(end)])?;
        }
        let tun = |end: End, peer: End| {
            self.in_netns(end, move || {
                let mut config = tun::Configuration::default();
                config
                    .tun_name(DEV)
                    .address(Link::addr(end))
                    .destination(Link::addr(peer))
                    .netmask("255.255.255.255")
                    .mtu(MTU)
                    .up();
                let dev =
                    tun::create(&config).with_context(|| format!("cannot create a TUN device for end {end:?}"))?;
                ip(&["link", "set", "lo", "up"])?;
                Ok(dev)
            })
        };
        let a = Arc::new(tun(End::A, End::B)?);
        let b = Arc::new(tun(End::B, End::A)?);
        // tbf needs a bucket of at least one timer tick's worth of bytes at the rate.
        let burst = format!("{}", (u64::from(mbit) * 1_000_000 / 8 / 250).max(64 * 1024));
        let rate = format!("{mbit}mbit");
        for end in [End::A, End::B] {
            let ns = self.netns(end);
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "add", "dev", DEV, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "100ms",
                ],
            )?;
        }
        self.relay(a.clone(), b.clone(), delay);
        self.relay(b, a, delay);
        Ok(())
    }

    /// Packets read from `from` go into `to` `delay` later.
    fn relay(&mut self, from: Arc<tun::Device>, to: Arc<tun::Device>, delay: Duration) {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE);
        let (stop, dropped) = (self.stop.clone(), self.dropped.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = from.recv_timeout(&mut buf, Duration::from_millis(100))
                    && tx.try_send((Instant::now() + delay, buf[..n].to_vec())).is_err()
                {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((due, packet)) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                // A packet the device will not take is lost, as on a wire.
                let _ = to.send(&packet);
            }
        }));
    }

    /// Runs `f` on a thread inside an end's namespace: sockets and devices it creates stay in
    /// that namespace after it returns, and processes it starts run there.
    pub fn in_netns<T: Send + 'static>(&self, end: End, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.netns(end));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
            // Changes this thread's namespace only.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for end in [End::A, End::B] {
            let _ = Command::new("ip").args(["netns", "del", &self.netns(end)]).status();
        }
    }
}
