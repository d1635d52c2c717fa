//! `uvs ipset …` on the control thread: the command runs against the
//! published sets ([`crate::datapath::tables::ipset::command`], a pure
//! function) and, if it changed them, the caller publishes the ruleset
//! this returns (the same tables, the new sets), so the workers switch to
//! the new sets whole.

use crate::control::socket::Reply;
use crate::datapath::tables::ipset;
use crate::datapath::tables::Ruleset;

/// Runs `argv` (the words after `ipset`; `restore`'s text is the last
/// word) against `cur`: the ruleset to publish if the sets changed, and
/// the answer.
pub fn request(cur: &Ruleset, argv: &[String]) -> (Option<Ruleset>, Reply) {
    let (words, stdin) = match argv.first().map(String::as_str) {
        Some("restore" | "-R") if argv.len() >= 2 => {
            (&argv[..argv.len() - 1], Some(argv[argv.len() - 1].as_str()))
        }
        _ => (argv, None),
    };
    let refs = |id: u32| cur.set_refs(id);
    match ipset::command(&cur.sets, &refs, words, stdin) {
        Ok(o) => {
            let new = o.sets.map(|s| cur.with_sets(std::sync::Arc::new(s)));
            let reply = Reply {
                status: o.status,
                stdout: if o.status == 0 {
                    o.out.clone()
                } else {
                    String::new()
                },
                stderr: if o.status == 0 { String::new() } else { o.out },
            };
            (new, reply)
        }
        Err(e) => {
            let what = words.first().map_or("", String::as_str);
            let tail = if what == "restore" {
                "; nothing changed"
            } else {
                ""
            };
            (None, Reply::err(format!("uvs ipset {what}: {e}{tail}")))
        }
    }
}

/// `--ipsets FILE` at start and on reload: the sets the file creates,
/// each replacing the set of the same name whole (its members become the
/// file's), on top of `cur` (sets the file does not name stay).
pub fn from_file(cur: &Ruleset, name: &str, text: &str) -> Result<ipset::Sets, String> {
    let refs = |id: u32| cur.set_refs(id);
    ipset::reload(&cur.sets, &refs, text).map_err(|e| format!("ipsets {name}: {e}"))
}
