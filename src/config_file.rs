//! The agent's configuration file (`/etc/nodeward/agent.toml`): keys are the agent's long flag names.
//! Precedence: command-line flag > environment variable > file > built-in default. The file is turned
//! into extra command-line arguments for the options not already set by a flag or the environment,
//! so clap stays the one place where options are parsed and validated.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Options that make no sense in a configuration file.
const NOT_IN_FILE: &[&str] = &["config", "check-config", "help", "version"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("invalid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("unknown key {key:?} (valid keys: {valid})")]
    UnknownKey { key: String, valid: String },
    #[error("key {key:?}: {reason}")]
    BadValue { key: String, reason: String },
}

/// The arguments the file `text` adds to `cmd` given what `matches` already holds.
pub fn file_args(
    text: &str,
    cmd: &Command,
    matches: &ArgMatches,
) -> Result<Vec<OsString>, ConfigFileError> {
    let table: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILE.contains(&key.as_str()))
            .ok_or_else(|| ConfigFileError::UnknownKey {
                key: key.clone(),
                valid: file_keys(cmd).join(", "),
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let bad = |reason: &str| ConfigFileError::BadValue {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => out.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("expected true or false")),
            }
            continue;
        }
        let values = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let s = scalar(v).ok_or_else(|| bad("expected a string, number or boolean"))?;
            out.push(format!("--{key}={s}").into());
        }
    }
    Ok(out)
}

/// The keys a configuration file for `cmd` may hold.
pub fn file_keys(cmd: &Command) -> Vec<&str> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l))
        .collect()
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("agent")
            .arg(Arg::new("addr").long("addr").default_value(":1"))
            .arg(Arg::new("dir").long("runtime-dir").env("T_NODEWARD_DIR"))
            .arg(
                Arg::new("no_pidfd")
                    .long("no-pidfd")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("cg").long("pods-cgroup").action(ArgAction::Append))
            .arg(
                Arg::new("max")
                    .long("max")
                    .value_parser(clap::value_parser!(usize)),
            )
            .arg(Arg::new("config").long("config"))
    }

    fn args(text: &str, argv: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let c = cmd();
        let m = c.clone().try_get_matches_from(argv).unwrap();
        Ok(file_args(text, &c, &m)?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let text = "addr = \":9\"\nno-pidfd = true\npods-cgroup = [\"a\", \"b\"]\nmax = 5\n";
        assert_eq!(
            args(text, &["agent"]).unwrap(),
            [
                "--addr=:9",
                "--max=5",
                "--no-pidfd",
                "--pods-cgroup=a",
                "--pods-cgroup=b"
            ]
        );
        assert_eq!(
            args(text, &["agent", "--addr", ":7", "--max=1"]).unwrap(),
            ["--no-pidfd", "--pods-cgroup=a", "--pods-cgroup=b"]
        );
        assert!(args("no-pidfd = false", &["agent"]).unwrap().is_empty());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = args("adr = \":9\"", &["agent"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown key \"adr\"") && e.contains("addr"),
            "{e}"
        );
        assert!(args("config = \"x\"", &["agent"]).is_err());
        assert!(matches!(
            args("no-pidfd = \"yes\"", &["agent"]),
            Err(ConfigFileError::BadValue { .. })
        ));
        assert!(matches!(
            args("addr = {a = 1}", &["agent"]),
            Err(ConfigFileError::BadValue { .. })
        ));
        assert!(matches!(
            args("addr = ", &["agent"]),
            Err(ConfigFileError::Parse(_))
        ));
    }
}
