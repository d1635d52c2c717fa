//! uvsadm: ipvsadm's command line for uvs.
//!
//! The arguments are checked here with the engine's own parser, so usage
//! errors, `-h` and `-v` need no engine; a valid command is sent as-is to
//! the running engine over its control socket (`--control PATH`, else
//! `$UVS_CONTROL`, else /run/uvs/uvs.sock), which applies it and answers
//! with ipvsadm's output formats, texts and exit statuses. `-R` sends
//! standard input along as one batch that is applied all or nothing.
//!
//! Names are this process's business, as they are ipvsadm's: host and
//! port names in a command (or in `-R` input) become numbers before it is
//! sent, and without `-n` the numbers of `-L`/`-S` output become names
//! (`control::resolver`, bounded in time).
//!
//! Exit statuses are ipvsadm 1.31's: 0, 2 for what ipvsadm refuses itself
//! (and when the engine cannot be reached, as ipvsadm when IPVS is
//! missing), 255 for usage errors and what the kernel refuses, 1 for `-L`
//! of a missing service.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use uvs::control::resolver::{Collect, SystemNames, REVERSE_BUDGET};
use uvs::control::{ctl, socket};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut path: Option<PathBuf> = None;
    // --control is uvsadm's own option, not ipvsadm's: take it out here.
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--control" {
            if i + 1 >= args.len() {
                eprintln!("uvsadm: --control needs a socket path");
                return ExitCode::from(2);
            }
            path = Some(PathBuf::from(args.remove(i + 1)));
            args.remove(i);
        } else if let Some(p) = args[i].strip_prefix("--control=") {
            path = Some(PathBuf::from(p));
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let mut names = SystemNames::new();
    let args = ctl::names::resolve(&args, &names);
    // The parser shared with the engine: help, version and every usage
    // error are answered here, as ipvsadm answers them without the kernel.
    let cmd = match ctl::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", e.error_text());
            return ExitCode::from(e.exit_status());
        }
    };
    match cmd {
        ctl::Command::Help => {
            print!("{}", ctl::usage());
            return ExitCode::SUCCESS;
        }
        ctl::Command::Version => {
            print!("{}", ctl::version());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let mut req = vec!["uvsadm".to_string()];
    if cmd == ctl::Command::Restore {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("uvsadm: reading commands from stdin: {e}");
            return ExitCode::from(2);
        }
        if let Some(line) = uvs::control::daemon::nul_line(&text) {
            eprintln!("uvsadm: line {line} of the -R input holds a NUL byte; nothing was applied");
            return ExitCode::from(2);
        }
        req = vec![
            "uvsadm-restore".to_string(),
            ctl::names::resolve_script(&text, &names),
        ];
    } else {
        req.extend(args);
    }
    let path = socket::path(path.as_deref());
    // `-L -c -n`: printed as it arrives (millions of entries; no names to
    // look up across the whole listing).
    if let ctl::Command::List(o) = &cmd {
        if o.connection && o.numeric && !o.json {
            let mut out = std::io::stdout().lock();
            let r = socket::call_streamed(&path, &req, |piece| {
                std::io::Write::write_all(&mut out, piece.as_bytes())
            });
            let _ = std::io::Write::flush(&mut out);
            return match r {
                Ok(r) => {
                    eprint!("{}", r.stderr);
                    ExitCode::from(r.status)
                }
                Err(e) => {
                    eprintln!("uvsadm: {e}");
                    ExitCode::from(2)
                }
            };
        }
    }
    match socket::call(&path, &req) {
        Ok(r) => {
            let mut stdout = r.stdout;
            if r.status == 0 {
                // Without -n: name the addresses, all looked up together.
                // (-n and other commands: no look-ups, text unchanged.)
                let seen = Collect::default();
                let _ = ctl::names::rename(&cmd, &stdout, &seen);
                names.prefetch(seen.addrs.take(), REVERSE_BUDGET);
                stdout = ctl::names::rename(&cmd, &stdout, &names);
            }
            print!("{stdout}");
            eprint!("{}", r.stderr);
            ExitCode::from(r.status)
        }
        Err(e) => {
            eprintln!("uvsadm: {e}");
            ExitCode::from(2)
        }
    }
}
