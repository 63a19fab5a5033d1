//! The startup packet's `options` value, read as PostgreSQL reads it
//! (`pg_split_opts`, then the server's command-line switches), for the one
//! setting routing needs: `default_transaction_isolation`.

/// Switches of `postgres` that take an argument (its getopt string
/// `B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:`); `-c name=value` and
/// `--name=value` set a setting.
const WITH_ARGUMENT: &[u8] = b"BcCDdfhkNprStvW-";

/// Whether a startup packet's `options` value sets
/// `default_transaction_isolation` to `serializable`: `Some(true/false)`
/// when it sets it (the last setting wins, as in PostgreSQL), `None` when it
/// does not. Words are split on unescaped whitespace, a backslash takes the
/// next character literally (libpq's and PostgreSQL's `pg_split_opts`); `-c
/// name=value`, `-cname=value`, `--name=value` (dashes in the name read as
/// underscores) and bundled switches (`-Ec name=value`) are understood; the
/// name and the value are case-insensitive.
pub fn startup_options_serializable(options: &str) -> Option<bool> {
    let words = split_options(options);
    let mut out = None;
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_bytes();
        i += 1;
        if word.len() < 2 || word[0] != b'-' {
            continue;
        }
        // getopt: switch characters one by one until one takes an argument.
        let mut j = 1;
        while j < word.len() {
            let switch = word[j];
            j += 1;
            if !WITH_ARGUMENT.contains(&switch) {
                continue;
            }
            let argument = if j < word.len() {
                String::from_utf8_lossy(&word[j..]).into_owned()
            } else if i < words.len() {
                i += 1;
                words[i - 1].clone()
            } else {
                String::new()
            };
            if switch == b'c' || switch == b'-' {
                if let Some((name, value)) = argument.split_once('=') {
                    let name = name.replace('-', "_");
                    if name.eq_ignore_ascii_case("default_transaction_isolation") {
                        out = Some(value.trim().eq_ignore_ascii_case("serializable"));
                    }
                }
            }
            break;
        }
    }
    out
}

/// `pg_split_opts`: whitespace separates words unless escaped by a
/// backslash; a backslash makes the next character literal.
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            if c == '\\' {
                // A trailing backslash stays itself.
                word.push(chars.next().unwrap_or('\\'));
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_default_transaction_isolation() {
        for (options, want) in [
            ("-c default_transaction_isolation=serializable", Some(true)),
            ("-cdefault_transaction_isolation=SERIALIZABLE", Some(true)),
            ("--default-transaction-isolation=serializable", Some(true)),
            ("--default_transaction_isolation=serializable", Some(true)),
            (
                "-c search_path=a -c default_transaction_isolation=serializable -c work_mem=4MB",
                Some(true),
            ),
            ("-c default_transaction_isolation=repeatable\\ read", Some(false)),
            (
                "-c default_transaction_isolation=serializable -c default_transaction_isolation=read\\ committed",
                Some(false),
            ),
            (
                "  -c\tdefault_transaction_isolation=read\\ committed   --default-transaction-isolation=serializable ",
                Some(true),
            ),
            ("-Ec default_transaction_isolation=serializable", Some(true)),
            ("-c search_path=a", None),
            ("", None),
            // An escaped space keeps the value one word: not a switch.
            ("-c application_name=x\\ -c\\ default_transaction_isolation=serializable", None),
            // `-B` takes the next word as its argument.
            ("-B -c default_transaction_isolation=serializable", None),
        ] {
            assert_eq!(startup_options_serializable(options), want, "{options:?}");
        }
    }

    #[test]
    fn splits_like_pg_split_opts() {
        assert_eq!(
            split_options(" a\\ b  c\\\\d e\\"),
            vec!["a b".to_string(), "c\\d".to_string(), "e\\".to_string()]
        );
    }
}
