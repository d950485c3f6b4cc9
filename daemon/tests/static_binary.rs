//! The container image (`deploy/Dockerfile`) holds nothing but `/kvip`: no
//! libc, no shell, no `/etc`, and no environment beyond what the DaemonSet
//! sets. This test builds the binary the image is built from — release, for
//! `x86_64-unknown-linux-musl` — proves from its ELF headers that it needs no
//! dynamic loader and no shared library, and runs it the way the image does:
//! alone in an empty root directory, with an empty environment.
//!
//! When the musl target is missing and `rustup` cannot add it, the test
//! checks the glibc build instead: it may need only the loader, libc, libm
//! and libgcc_s, which the Dockerfile's `distroless/cc` fallback stage has.

mod release_build;

use release_build::{MUSL, build_release, ensure_musl, image_target_dir};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Shared libraries a `distroless/cc` base provides.
const GLIBC_BASE_LIBRARIES: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "ld-linux-x86-64.so.2",
];

/// The glibc loader on x86-64.
const GLIBC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// How long one run of the binary may take; every run here ends at once.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The ELF reader: just enough of an x86-64 executable's headers to tell what
// the kernel and the dynamic loader need before `main` runs.

/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;
/// `e_type` of a fixed-address executable and of a position-independent one.
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
/// Program header types.
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
/// Dynamic section tags.
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// What an executable needs from the system to start.
#[derive(Debug, PartialEq, Eq)]
struct Linking {
    /// `PT_INTERP`: the dynamic loader the kernel starts first, if any.
    interpreter: Option<String>,
    /// `DT_NEEDED`: the shared libraries that loader must find.
    needed: Vec<String>,
}

impl Linking {
    /// Fully static: the kernel can start it in an empty root directory.
    fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

fn bytes_at(elf: &[u8], offset: u64, len: usize) -> Result<&[u8], String> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| elf.get(start..start.checked_add(len)?))
        .ok_or_else(|| format!("truncated ELF: {len} bytes at offset {offset}"))
}

fn u16_at(elf: &[u8], offset: u64) -> Result<u16, String> {
    let b = bytes_at(elf, offset, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(elf: &[u8], offset: u64) -> Result<u32, String> {
    let b = bytes_at(elf, offset, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(elf: &[u8], offset: u64) -> Result<u64, String> {
    let b = bytes_at(elf, offset, 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Ok(u64::from_le_bytes(word))
}

/// The NUL-terminated string at `offset`.
fn c_string_at(elf: &[u8], offset: u64) -> Result<String, String> {
    let start = usize::try_from(offset).map_err(|_| "string offset out of range".to_string())?;
    let tail = elf
        .get(start..)
        .ok_or_else(|| format!("string offset {offset} is past the end of the file"))?;
    let end = tail
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| format!("unterminated string at offset {offset}"))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

/// One program header: (type, file offset, virtual address, size in the file).
type Segment = (u32, u64, u64, u64);

/// Reads the program headers and dynamic section of a little-endian ELF64
/// x86-64 executable.
fn read_linking(elf: &[u8]) -> Result<Linking, String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".to_string());
    }
    if elf.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a 64-bit little-endian ELF file".to_string());
    }
    let kind = u16_at(elf, 16)?;
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(format!("ELF type {kind} is not an executable"));
    }
    let machine = u16_at(elf, 18)?;
    if machine != EM_X86_64 {
        return Err(format!("ELF machine {machine} is not x86-64"));
    }
    let phoff = u64_at(elf, 32)?;
    let phentsize = u64::from(u16_at(elf, 54)?);
    let phnum = u64::from(u16_at(elf, 56)?);
    if phentsize < 56 {
        return Err(format!("program header entries of {phentsize} bytes"));
    }
    let mut segments: Vec<Segment> = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        segments.push((
            u32_at(elf, at)?,
            u64_at(elf, at + 8)?,
            u64_at(elf, at + 16)?,
            u64_at(elf, at + 32)?,
        ));
    }

    let mut interpreter = None;
    for (kind, offset, _, size) in &segments {
        if *kind == PT_INTERP {
            let text = bytes_at(elf, *offset, usize::try_from(*size).unwrap_or(usize::MAX))?;
            let path = String::from_utf8_lossy(text);
            interpreter = Some(path.trim_end_matches('\0').to_string());
        }
    }

    // DT_NEEDED entries are offsets into the string table, which DT_STRTAB
    // gives as a virtual address: map it back to the file through PT_LOAD.
    let mut needed_offsets = Vec::new();
    let mut strtab_address = None;
    for (_, offset, _, size) in segments.iter().filter(|s| s.0 == PT_DYNAMIC) {
        let mut at = *offset;
        while at + 16 <= offset + size {
            let (tag, value) = (u64_at(elf, at)?, u64_at(elf, at + 8)?);
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed_offsets.push(value),
                DT_STRTAB => strtab_address = Some(value),
                _ => {}
            }
            at += 16;
        }
    }
    let mut needed = Vec::new();
    if !needed_offsets.is_empty() {
        let address = strtab_address.ok_or("DT_NEEDED without DT_STRTAB")?;
        let strtab = segments
            .iter()
            .find(|(kind, _, vaddr, size)| {
                *kind == PT_LOAD && (*vaddr..vaddr + size).contains(&address)
            })
            .map(|(_, offset, vaddr, _)| address - vaddr + offset)
            .ok_or("the string table is in no loaded segment")?;
        for name in needed_offsets {
            needed.push(c_string_at(elf, strtab + name)?);
        }
    }
    Ok(Linking {
        interpreter,
        needed,
    })
}

fn linking_of(binary: &Path) -> Linking {
    let elf =
        std::fs::read(binary).unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    read_linking(&elf).unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
}

// ---------------------------------------------------------------------------
// Running the binary as the image runs it.

/// What a run of the binary produced.
#[derive(Debug)]
struct Run {
    /// The exit code; `None` when a signal ended it.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// An empty directory that becomes the binary's whole filesystem.
struct ImageRoot {
    dir: PathBuf,
    /// Whether runs are confined to it with chroot (needs root).
    chroot: Option<PathBuf>,
}

impl ImageRoot {
    /// Copies `binary` to `/kvip` of a fresh empty directory.
    fn new(binary: &Path, confine: bool) -> Self {
        let dir = image_target_dir().join(format!("root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the image root");
        std::fs::copy(binary, dir.join("kvip")).expect("copy the binary into the image root");
        let chroot = if confine && nix::unistd::Uid::effective().is_root() {
            ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        } else {
            None
        };
        ImageRoot { dir, chroot }
    }

    /// Runs `/kvip ARGS` with nothing in its environment but `env` (`env -i`).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = match &self.chroot {
            Some(chroot) => {
                let mut c = Command::new(chroot);
                c.arg(&self.dir).arg("/kvip");
                c
            }
            None => Command::new(self.dir.join("kvip")),
        };
        cmd.args(args)
            .env_clear()
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start the binary");
        wait_with_timeout(child, &format!("kvip {}", args.join(" ")))
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_with_timeout(mut child: Child, what: &str) -> Run {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the binary") {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not end within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// `kvip version`, then `kvip manager` refusing to start without a node
/// name and without credentials: clean messages and exit code 1, never a
/// panic (exit code 101) or a signal.
fn check_runs_as_the_image_does(root: &ImageRoot) {
    let version = root.run(&["version"], &[]);
    assert_eq!(version.code, Some(0), "kvip version: {version:?}");
    assert!(
        version
            .stdout
            .starts_with(&format!("kvip {}", env!("CARGO_PKG_VERSION"))),
        "kvip version printed {:?}",
        version.stdout
    );

    let refused = |run: &Run, needle: &str, what: &str| {
        assert_eq!(run.code, Some(1), "{what}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{what} panicked: {run:?}");
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("kvip: ") && last.contains(needle),
            "{what}: the last line of stderr should be kvip's error about {needle}: {run:?}"
        );
    };

    let empty = root.run(&["manager"], &[]);
    refused(
        &empty,
        "vip_nodename",
        "kvip manager with an empty environment",
    );

    // Metrics off, so the run binds no port on this machine.
    let no_credentials = root.run(
        &["manager"],
        &[
            ("vip_nodename", "node-a"),
            ("svc_enable", "true"),
            ("prometheus_server", ""),
        ],
    );
    refused(
        &no_credentials,
        "no Kubernetes credentials",
        "kvip manager outside a pod without a kubeconfig",
    );
}

#[test]
fn the_image_binary_is_static_and_runs_alone() {
    match ensure_musl() {
        Ok(()) => {
            let binary = build_release(Some(MUSL));
            let linking = linking_of(&binary);
            assert!(
                linking.is_static(),
                "{} is not statically linked: {linking:?}; a FROM scratch image could not start it",
                binary.display()
            );
            let root = ImageRoot::new(&binary, true);
            if root.chroot.is_none() {
                eprintln!(
                    "not root: running {} with an empty environment but without chroot",
                    binary.display()
                );
            }
            check_runs_as_the_image_does(&root);
        }
        Err(why) => {
            eprintln!(
                "{MUSL} is unavailable ({why}); checking that the glibc build needs only what \
                 a distroless/cc base has (the Dockerfile's fallback stage)"
            );
            let binary = build_release(None);
            let linking = linking_of(&binary);
            assert_eq!(
                linking.interpreter.as_deref(),
                Some(GLIBC_LOADER),
                "{linking:?}"
            );
            let extra: Vec<&String> = linking
                .needed
                .iter()
                .filter(|n| !GLIBC_BASE_LIBRARIES.contains(&n.as_str()))
                .collect();
            assert!(
                extra.is_empty(),
                "the glibc build needs libraries a distroless/cc base lacks: {extra:?}"
            );
            check_runs_as_the_image_does(&ImageRoot::new(&binary, false));
        }
    }
}

/// The reader must see what makes a binary dynamic, or the static check
/// above would pass for anything: the test build of kvip is a glibc one.
#[test]
fn the_elf_reader_sees_the_loader_and_libraries_of_a_glibc_build() {
    let linking = linking_of(Path::new(env!("CARGO_BIN_EXE_kvip")));
    assert!(!linking.is_static(), "{linking:?}");
    assert_eq!(
        linking.interpreter.as_deref(),
        Some(GLIBC_LOADER),
        "{linking:?}"
    );
    assert!(
        linking.needed.iter().any(|n| n == "libc.so.6"),
        "{linking:?}"
    );
}

#[test]
fn the_elf_reader_refuses_what_is_not_an_x86_64_executable() {
    assert!(read_linking(b"#!/bin/sh\n").is_err());
    assert!(read_linking(b"\x7fELF").is_err());
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2;
    header[5] = 1;
    header[16] = 2;
    header[18] = 183; // aarch64
    let err = read_linking(&header).unwrap_err();
    assert!(err.contains("not x86-64"), "{err}");
}
