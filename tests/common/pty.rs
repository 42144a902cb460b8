//! A pseudo-terminal for the interactive commands (`share receive`,
//! `--watch`): the child gets the terminal side as stdin, stdout and
//! stderr (so it sees a terminal and asks, draws bars, redraws in place),
//! the test reads and writes the other side.
//!
//! [`Pty::expect`] waits for text to appear in the output: that is the
//! event these tests synchronise on (with a deadline that only turns a
//! hang into a failure). Terminal escape sequences are removed before
//! matching; [`Pty::raw`] keeps them for tests about the drawing itself.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::OpenptFlags;

/// How long [`Pty::expect`] waits.
const EXPECT_LIMIT: Duration = Duration::from_secs(30);

/// Columns and rows of the test terminal.
pub const SIZE: (u16, u16) = (120, 40);

#[derive(Default)]
struct Output {
    bytes: Mutex<Vec<u8>>,
    grew: Condvar,
}

/// A child process on a pseudo-terminal.
pub struct Pty {
    master: File,
    output: Arc<Output>,
    /// How much of the (cleaned) output earlier expectations consumed.
    seen: usize,
    child: Child,
}

impl Pty {
    /// Starts `cmd` with a terminal of [`SIZE`] as its stdin, stdout and
    /// stderr.
    pub fn spawn(mut cmd: Command) -> Self {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
        rustix::termios::tcsetwinsize(
            &master,
            rustix::termios::Winsize {
                ws_col: SIZE.0,
                ws_row: SIZE.1,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .expect("set the terminal size");
        let slave: OwnedFd = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
            rustix::fs::Mode::empty(),
        )
        .expect("open the terminal side");
        let child = cmd
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .expect("start the command on the terminal");
        let master = File::from(master);
        let output = Arc::new(Output::default());
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the child and its terminal side are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.grew.notify_all();
            }
        });
        Self {
            master,
            output,
            seen: 0,
            child,
        }
    }

    /// Everything written to the terminal so far, escape sequences and all.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.output.bytes.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears in the output after what earlier
    /// calls matched; returns the output up to and including it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + EXPECT_LIMIT;
        let mut bytes = self.output.bytes.lock().unwrap();
        loop {
            // Up to the last complete character: the rest is still coming.
            let complete = match std::str::from_utf8(&bytes) {
                Ok(all) => all,
                Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap(),
            };
            let text = clean(complete);
            if let Some(at) = text[self.seen.min(text.len())..].find(needle) {
                let end = self.seen + at + needle.len();
                let before = text[self.seen..end].to_owned();
                self.seen = end;
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} on the terminal within {EXPECT_LIMIT:?}; it shows:\n{}",
                &text[self.seen.min(text.len())..]
            );
            bytes = self.output.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }

    /// Types `text`.
    pub fn send(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Sends `signal` to the child (what Ctrl-C does on a real terminal,
    /// where this child would be the foreground process).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` without terminal escape sequences and carriage returns.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
