//! Offline documentation: shell completions and the manual page.
//!
//! Both are generated from the same clap definitions as the parser, so
//! they cannot drift from what `share` accepts. The packaging script
//! (`packaging/build-deb.sh`) installs their output; users of
//! `cargo install` can run them by hand (`share man | man -l -`).
//!
//! The manual is one page, `share(1)`, in the style of small tools: the
//! global synopsis and options, then a COMMANDS section with the synopsis
//! and options of every subcommand, then FILES and ENVIRONMENT.

use std::io::Write;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Cli;

/// `share completions SHELL`: the script on stdout. It is rendered into
/// memory first: clap_complete panics when its writer fails, and stdout
/// may be a pipe that is already closed (`share completions bash | true`).
pub(super) fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "share", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// `share man`: the roff page on stdout.
pub(super) fn man() -> Result<()> {
    let page = render_man().context("cannot render the manual page")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&page)?;
    out.flush()?;
    Ok(())
}

/// Extra sections appended after the generated ones.
const FILES_AND_ENVIRONMENT: &str = r#".SH "RUNNING AS A SERVICE"
The system service (\fBsystemctl enable \-\-now lanshare\fR) runs \fBshare daemon\fR as user
\fBlanshare\fR. Root and the members of group \fBlanshare\fR may use every command; others are
refused with "permission denied: add yourself to group lanshare" (\fBsudo usermod \-aG lanshare
$USER\fR, then log in again). \fBshare send\fR opens your files with your own permissions and
passes the open files to the daemon, so the service never reads a file you could not.
A per\-user service is available with \fBsystemctl \-\-user enable \-\-now lanshare\fR.
.SH FILES
.TP
\fI/etc/lanshare/config.toml\fR
System service configuration (TOML; most keys are also \fBshare daemon\fR flags).
.TP
\fI$XDG_CONFIG_HOME/lanshare/config.toml\fR
Per\-user daemon configuration.
.TP
\fI/var/lib/lanshare/state\fR, \fI$XDG_STATE_HOME/lanshare\fR
Identity (private key and certificate), trusted devices, resume state.
.TP
\fI/var/lib/lanshare/incoming\fR, \fI$XDG_DOWNLOAD_DIR\fR or \fI~/Downloads\fR
Received files (system service; per\-user daemon).
.TP
\fI/run/lanshare/share.sock\fR, \fI$XDG_RUNTIME_DIR/lanshare/share.sock\fR
Control sockets of the system service and of a per\-user daemon (without
\fBXDG_RUNTIME_DIR\fR: \fI/run/user/UID/lanshare/share.sock\fR if it exists, else
\fI~/.local/state/lanshare/share.sock\fR).
.TP
\fI/usr/lib/sysctl.d/60\-lanshare.conf\fR
Raises the UDP socket buffer limits QUIC needs at LAN speed.
.SH ENVIRONMENT
.TP
\fBSHARE_SOCKET\fR
Control socket to use (as \fB\-\-socket\fR).
.TP
\fBSHARE_SERVICE_USER\fR
The system service's user (default \fBlanshare\fR): besides you and root, the only
user the CLI lets own the socket's directory and serve the socket.
.TP
\fBRUST_LOG\fR
Log filter, e.g. \fBdebug\fR or \fBlanshare=debug\fR (default: info for the daemon, warn otherwise).
.TP
\fBTOKIO_WORKER_THREADS\fR
Async worker threads of the daemon (default: half the cores, at least one).
.SH "EXIT STATUS"
0 on success, 2 for a usage error, 78 for a daemon that cannot start until its configuration
or files are fixed, 1 for any other failure (one line on stderr).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjournalctl\fR(1)
"#;

/// Renders the whole page.
fn render_man() -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .title("SHARE")
        .section("1");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    writeln!(page, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("share {}", sub.get_name());
        writeln!(page, ".SS \"{name}\"")?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(page, "{}", escape(&about.to_string()))?;
        }
        // Global and built-in flags are described once, above.
        let sub = sub.clone().bin_name(&name).mut_args(|a| {
            let shared = a.is_global_set() || is_builtin(&a);
            a.hide(shared)
        });
        let sub_man = clap_mangen::Man::new(sub.clone());
        let mut synopsis = Vec::new();
        sub_man.render_synopsis_section(&mut synopsis)?;
        page.extend(strip_section_header(&synopsis, ".PP\n"));
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            let mut options = Vec::new();
            sub_man.render_options_section(&mut options)?;
            page.extend(strip_section_header(&options, ""));
        }
        // Actions such as `share queue cancel ID`: synopsis and summary.
        for action in sub
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let action_name = format!("{name} {}", action.get_name());
            let action = action.clone().bin_name(&action_name).mut_args(|a| {
                let shared = a.is_global_set() || is_builtin(&a);
                a.hide(shared)
            });
            let mut synopsis = Vec::new();
            clap_mangen::Man::new(action.clone()).render_synopsis_section(&mut synopsis)?;
            page.extend(strip_section_header(&synopsis, ".PP\n"));
            if let Some(about) = action.get_long_about().or(action.get_about()) {
                writeln!(page, ".RS\n{}\n.RE", escape(&about.to_string()))?;
            }
        }
    }
    page.extend_from_slice(FILES_AND_ENVIRONMENT.as_bytes());
    Ok(page)
}

/// `--help` / `--version`, which every command has.
fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// Drops the leading `.SH ...` line of a rendered section, so it can sit
/// under a `.SS` heading, putting `replacement` in its place.
fn strip_section_header(section: &[u8], replacement: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(section);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(".SH ") {
            out.push_str(replacement);
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// Escapes text for roff: backslashes, and a leading `.` or `'`.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\\\").replace('-', "\\-");
    match text.chars().next() {
        Some('.' | '\'') => format!("\\&{text}"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_covers_every_command() {
        let page = String::from_utf8(render_man().unwrap()).unwrap();
        assert!(page.contains("\n.TH SHARE 1"), "{}", &page[..80]);
        for sub in Cli::command().get_subcommands() {
            let heading = format!(".SS \"share {}\"", sub.get_name());
            assert!(page.contains(&heading), "missing {heading}");
        }
        assert!(
            page.contains("\\-\\-download\\-dir"),
            "daemon options missing"
        );
        assert!(page.contains("add yourself to group lanshare"));
        // Actions of commands are listed too.
        assert!(page.contains("share queue cancel"), "queue actions missing");
    }
}
