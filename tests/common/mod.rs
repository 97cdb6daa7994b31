//! Runs the installed VPP 26.06 with the freshly built plugin, for the
//! tests that need real VPP. VPP is found under `$VPP_PREFIX` (default
//! `/usr`); without it these tests print that they were skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// VPP instances poll their cores flat out: run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn vpp_prefix() -> PathBuf {
    PathBuf::from(std::env::var("VPP_PREFIX").unwrap_or_else(|_| "/usr".into()))
}

/// The installed VPP, or `None` after printing why the test is skipped.
pub fn installed_vpp(test: &str) -> Option<PathBuf> {
    let vpp = vpp_prefix().join("bin/vpp");
    if vpp.is_file() {
        Some(vpp)
    } else {
        eprintln!("SKIPPED {test}: no VPP 26.06 at {} (set VPP_PREFIX to run it)", vpp.display());
        None
    }
}

/// Builds the release plugin (the artefact VPP loads) and returns it.
pub fn plugin_so() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--lib", "--quiet"])
        .current_dir(&root)
        .status()
        .expect("running cargo");
    assert!(status.success(), "cargo build --release failed");
    root.join("target/release/libkp_plugin.so")
}

#[derive(Default)]
pub struct Options {
    pub workers: usize,
    /// Extra startup.conf text (e.g. a `kp { }` section).
    pub extra: String,
    /// Other stock plugins to load besides kp (e.g. "lb_plugin.so").
    pub plugins: Vec<&'static str>,
    /// The stats segment's size (default 32m).
    pub statseg: Option<&'static str>,
}

pub struct Vpp {
    child: Child,
    pub dir: PathBuf,
    pub cli: PathBuf,
    pub api: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

fn startup_conf(dir: &Path, plugins: &Path, o: &Options) -> String {
    let d = dir.display();
    let workers = if o.workers > 0 { format!("corelist-workers 1-{}", o.workers) } else { String::new() };
    let mut extra_plugins = String::new();
    for p in &o.plugins {
        extra_plugins += &format!(" plugin {p} {{ enable }}");
    }
    format!(
        "unix {{ nodaemon cli-listen {d}/cli.sock log {d}/vpp.log runtime-dir {d} }}\n\
         api-segment {{ prefix kp{pid} }}\n\
         socksvr {{ socket-name {d}/api.sock }}\n\
         statseg {{ socket-name {d}/stats.sock size {statseg} page-size 4k update-interval 1 }}\n\
         memory {{ main-heap-size 1G main-heap-page-size 4k }}\n\
         buffers {{ buffers-per-numa 16384 page-size 4k }}\n\
         cpu {{ main-core 0 {workers} }}\n\
         plugins {{ path {plugins} plugin default {{ disable }} plugin kp_plugin.so {{ enable }}{extra_plugins} }}\n\
         {extra}\n",
        pid = std::process::id(),
        plugins = plugins.display(),
        statseg = o.statseg.unwrap_or("32m"),
        extra = o.extra
    )
}

impl Vpp {
    /// Starts VPP with kp; `Err` carries VPP's output when it fails to start.
    pub fn start(vpp: &Path, o: Options) -> Result<Vpp, String> {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("kp-vpp-{}-{}", std::process::id(), unique()));
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(plugin_so(), plugins.join("kp_plugin.so")).unwrap();
        let system_plugins = vpp.parent().unwrap().parent().unwrap().join("lib/x86_64-linux-gnu/vpp_plugins");
        for p in &o.plugins {
            std::fs::copy(system_plugins.join(p), plugins.join(p)).unwrap();
        }
        let conf = dir.join("startup.conf");
        std::fs::write(&conf, startup_conf(&dir, &plugins, &o)).unwrap();
        let out = std::fs::File::create(dir.join("stdout")).unwrap();
        let child = Command::new(vpp)
            .arg("-c")
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting vpp");
        let mut v = Vpp { child, cli: dir.join("cli.sock"), api: dir.join("api.sock"), dir, _serial: serial };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = v.child.try_wait().unwrap() {
                return Err(format!("vpp exited ({status}):\n{}", v.output()));
            }
            if v.cli.exists() && v.ctl("show version").contains("vpp") {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("vpp did not come up:\n{}", v.output()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one CLI command and returns its output.
    pub fn ctl(&self, cmd: &str) -> String {
        let vppctl = vpp_prefix().join("bin/vppctl");
        let out = Command::new(vppctl).arg("-s").arg(&self.cli).arg(cmd).output().expect("running vppctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        text.replace("\r\n", "\n")
    }

    /// Whether packet-generator stream `name` is still sending (its
    /// `show packet-generator` line says `Yes` in the Enabled column).
    pub fn stream_running(&self, name: &str) -> bool {
        self.ctl("show packet-generator").lines().any(|line| {
            let mut w = line.split_whitespace();
            w.next() == Some(name) && w.next() == Some("Yes")
        })
    }

    /// What VPP printed on stdout/stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// VPP's resident memory (kB), from /proc.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Vpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("VPP output kept in {}", self.dir.display());
        }
    }
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's python (vpp_papi, scapy), or `None` after saying the
/// test is skipped.
pub fn venv_python(test: &str) -> Option<PathBuf> {
    let venv = root().join("target/venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    eprintln!(
        "SKIPPED {test}: no target/venv with vpp_papi (scripts/setup-deps makes it when VPP is installed)"
    );
    None
}

/// kp.api.json as the build generates it.
pub fn kp_api_json() -> String {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--release", "--bin", "kp-apigen"])
        .current_dir(root())
        .output()
        .expect("cargo run kp-apigen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An API directory like an installed VPP's (core files plus kp's), in
/// the VPP instance's directory `dir`, for vpp_papi.
pub fn apidir(dir: &Path) -> PathBuf {
    let api = dir.join("api");
    std::fs::create_dir_all(api.join("plugins")).unwrap();
    let core = vpp_prefix().join("share/vpp/api/core");
    std::fs::create_dir_all(api.join("core")).unwrap();
    for e in std::fs::read_dir(core).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), api.join("core").join(e.file_name())).unwrap();
    }
    std::fs::write(api.join("plugins/kp.api.json"), kp_api_json()).unwrap();
    api
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
