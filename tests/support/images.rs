//! The test bed's OCI images, built from the host's static busybox with umoci and cached in one
//! OCI layout (tags `busybox`, `noshell`, `pause`) under `target/testbed-images/`; plus layouts of
//! distinct padded images to pull ([`ensure_pull_layout`]) under `target/testbed-images/pull/`.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// The static busybox every image is made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// The images a test bed serves, by short name (= OCI tag = registry repository).
pub const IMAGES: [&str; 3] = ["busybox", "noshell", "pause"];

/// Bump when the recipe below changes, so cached layouts are rebuilt.
const RECIPE: &str = "r1";

/// How long the sandbox ("pause") container sleeps: forever, for a test.
const PAUSE_SECONDS: &str = "2147483647";

/// Where built layouts are cached; independent of `CARGO_TARGET_DIR`.
fn cache_root() -> PathBuf {
    super::repo().join("target/testbed-images")
}

/// The OCI layout holding all test bed images, built on first use and reused while busybox is
/// unchanged. Safe to call from parallel processes: each builds under a private name and the
/// first to rename its result into place wins.
pub fn ensure_layout() -> Result<PathBuf> {
    let root = cache_root();
    let key = format!("{RECIPE}-{}", busybox_key()?);
    cached_layout(&root, &key, Prune::Others, build_layout)
}

/// What a fresh build removes of the layouts beside it.
#[derive(PartialEq)]
enum Prune {
    /// Layouts of earlier recipes or busybox builds.
    Others,
    Nothing,
}

/// `<busybox mtime>.<nanos>-<size>`: cached layouts are rebuilt when busybox changes.
fn busybox_key() -> Result<String> {
    let meta = fs::metadata(BUSYBOX).with_context(|| {
        format!("{BUSYBOX} is missing: install busybox-static (scripts/deps.sh)")
    })?;
    Ok(format!(
        "{}.{}-{}",
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size()
    ))
}

/// `root/key`, built by `build(layout, work dir)` unless it exists. Parallel processes each
/// build under a private name; the first to rename its result into place wins.
fn cached_layout(
    root: &Path,
    key: &str,
    prune: Prune,
    build: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let layout = root.join(key);
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    check_static(Path::new(BUSYBOX))?;
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(root)
        .with_context(|| format!("creating a build dir in {}", root.display()))?;
    let built = work.path().join("layout");
    build(&built, work.path())
        .with_context(|| format!("building test bed images in {}", work.path().display()))?;
    match fs::rename(&built, &layout) {
        Ok(()) if prune == Prune::Others => prune_stale(root, key),
        Ok(()) => {}
        // Another process finished first; its layout is as good as ours.
        Err(_) if layout.join("index.json").is_file() => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("moving the built layout to {}", layout.display()));
        }
    }
    Ok(layout)
}

/// A dynamically linked busybox would fail inside the images with a confusing "no such file":
/// refuse an ELF64 binary with a `PT_INTERP` program header.
fn check_static(path: &Path) -> Result<()> {
    const PT_INTERP: u32 = 3;
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |at: usize, len: usize| -> Result<u64> {
        let raw = bytes
            .get(at..at + len)
            .with_context(|| format!("{} is not an ELF64 binary", path.display()))?;
        Ok(raw
            .iter()
            .rev()
            .fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    };
    ensure!(
        bytes.starts_with(b"\x7fELF\x02\x01"),
        "{} is not a little-endian ELF64 binary",
        path.display()
    );
    let (phoff, phentsize, phnum) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize)?;
        ensure!(
            field(at, 4)? != u64::from(PT_INTERP),
            "{} is dynamically linked: the test bed needs busybox-static",
            path.display()
        );
    }
    Ok(())
}

fn build_layout(layout: &Path, work: &Path) -> Result<()> {
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    umoci(&["init", "--layout", &layout.display().to_string()])?;

    // busybox: /bin/busybox plus a symlink per applet, PATH=/bin, no entrypoint.
    let rootfs = work.join("busybox-rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin)?;
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in applets()? {
        if applet != "busybox" {
            symlink("busybox", bin.join(&applet))
                .with_context(|| format!("linking applet {applet}"))?;
        }
    }
    new_image(&image("busybox"), &rootfs)?;
    umoci(&[
        "config",
        "--image",
        &image("busybox"),
        "--config.env",
        "PATH=/bin",
        "--config.cmd",
        "sh",
    ])?;

    // noshell: a single file /sleep (busybox dispatches on argv[0]); no shell, nothing else.
    let rootfs = work.join("noshell-rootfs");
    fs::create_dir_all(&rootfs)?;
    fs::copy(BUSYBOX, rootfs.join("sleep"))?;
    new_image(&image("noshell"), &rootfs)?;
    umoci(&[
        "config",
        "--image",
        &image("noshell"),
        "--config.env",
        "PATH=/",
    ])?;

    // pause: same content, entrypoint sleeps forever. As PID 1 without a handler it ignores
    // SIGTERM; containerd stops sandboxes with SIGKILL.
    new_image(&image("pause"), &rootfs)?;
    umoci(&[
        "config",
        "--image",
        &image("pause"),
        "--config.entrypoint",
        "/sleep",
        "--config.entrypoint",
        PAUSE_SECONDS,
    ])?;

    umoci(&["gc", "--layout", &layout.display().to_string()])
}

fn new_image(image: &str, rootfs: &Path) -> Result<()> {
    umoci(&["new", "--image", image])?;
    umoci(&[
        "insert",
        "--image",
        image,
        &rootfs.display().to_string(),
        "/",
    ])
}

fn applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list"))?;
    ensure!(
        out.status.success(),
        "{BUSYBOX} --list failed: {}",
        out.status
    );
    let list = String::from_utf8(out.stdout).context("busybox --list printed non-UTF-8")?;
    let applets: Vec<String> = list.lines().map(str::to_owned).collect();
    ensure!(
        applets.iter().any(|a| a == "sh"),
        "{BUSYBOX} has no sh applet"
    );
    Ok(applets)
}

fn umoci(args: &[&str]) -> Result<()> {
    let out = Command::new("umoci")
        .args(args)
        .output()
        .context("running umoci (install it: scripts/deps.sh)")?;
    if !out.status.success() {
        bail!(
            "umoci {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Images to pull (image puller tests and benchmark), cached in one OCI layout under
/// `target/testbed-images/pull-<count>x<pad_kib>k-<busybox key>/`: tags `pull-0` … `pull-<count-1>`,
/// each busybox plus a layer of its own `pad_kib` KiB of random data (so that no two share
/// content). Safe to call from parallel processes.
pub fn ensure_pull_layout(count: usize, pad_kib: usize) -> Result<PathBuf> {
    let key = format!("{count}x{pad_kib}k-{}", busybox_key()?);
    // Layouts of other sizes stay: tests and the benchmark use different ones.
    cached_layout(
        &cache_root().join("pull"),
        &key,
        Prune::Nothing,
        |built, work| {
            umoci(&["init", "--layout", &built.display().to_string()])?;
            let mut random = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
            for i in 0..count {
                let rootfs = work.join(format!("pull-{i}-rootfs"));
                fs::create_dir_all(rootfs.join("bin"))?;
                fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
                let mut pad = fs::File::create(rootfs.join("pad"))?;
                std::io::copy(
                    &mut std::io::Read::take(&mut random, (pad_kib * 1024) as u64),
                    &mut pad,
                )
                .context("writing the padding")?;
                let image = format!("{}:pull-{i}", built.display());
                new_image(&image, &rootfs)?;
                umoci(&["config", "--image", &image, "--config.cmd", "/bin/busybox"])?;
            }
            umoci(&["gc", "--layout", &built.display().to_string()])
        },
    )
}

/// Remove layouts of earlier recipes or busybox builds, and build dirs abandoned by killed
/// processes (best-effort).
fn prune_stale(root: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = if name.starts_with(".build-") {
            // Another process may be building right now: only remove old ones.
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600))
        } else {
            name != keep && name != "pull"
        };
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
