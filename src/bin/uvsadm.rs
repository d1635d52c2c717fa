//! uvsadm: ipvsadm's command line for uvs.
//!
//! Every argument is sent as-is to the running engine over its control
//! socket (`--control PATH`, else `$UVS_CONTROL`, else /run/uvs/uvs.sock);
//! the engine parses, validates and applies it, and answers with ipvsadm's
//! output formats. `-R` sends standard input along as one batch that is
//! applied all or nothing.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

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
    // Help and version need no engine, as with ipvsadm; the parser shared
    // with the daemon says which command this is.
    if let Ok(cmd) = ctl::parse(&args) {
        if matches!(cmd, ctl::Command::Help | ctl::Command::Version) {
            let text = if cmd == ctl::Command::Help {
                ctl::usage()
            } else {
                ctl::version()
            };
            print!("{text}");
            return ExitCode::SUCCESS;
        }
    }
    let restore = args.iter().any(|a| a == "-R" || a == "--restore");
    let mut req = vec!["uvsadm".to_string()];
    req.extend(args);
    if restore {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("uvsadm: reading commands from stdin: {e}");
            return ExitCode::from(2);
        }
        req = vec!["uvsadm-restore".to_string(), text];
    }
    match socket::call(&socket::path(path.as_deref()), &req) {
        Ok(r) => {
            print!("{}", r.stdout);
            eprint!("{}", r.stderr);
            ExitCode::from(r.status)
        }
        Err(e) => {
            eprintln!("uvsadm: {e}");
            ExitCode::from(2)
        }
    }
}
