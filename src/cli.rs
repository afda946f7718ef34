//! Command-line parsing shared by the examples: flags with values
//! (`--runs 3` or `--runs=3`), numbers checked against a range, and errors
//! that say which flag was wrong and what it takes.
//!
//! ```
//! use durable_workspace::cli::Args;
//!
//! let mut args = Args::new(["--runs=3", "--json"]);
//! let mut runs = 1;
//! let mut json = false;
//! while let Some(flag) = args.next_flag() {
//!     match flag.as_str() {
//!         "--runs" => runs = args.number("--runs", 1..=100).unwrap(),
//!         "--json" => json = true,
//!         other => panic!("unexpected {other}"),
//!     }
//! }
//! assert_eq!((runs, json), (3, true));
//!
//! let error = Args::new(["--runs", "zero"]).number_after("--runs", 1..=100).unwrap_err();
//! assert_eq!(error.to_string(), "--runs takes a whole number from 1 to 100, not \"zero\"");
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::ops::RangeInclusive;

/// A command-line mistake, with a message that says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    message: String,
}

impl CliError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// An unknown flag or argument.
    pub fn unknown(arg: &str) -> Self {
        if arg.starts_with('-') {
            Self::new(format!("unknown flag {arg:?} (see --help)"))
        } else {
            Self::new(format!("unexpected argument {arg:?} (see --help)"))
        }
    }
}

/// What a command line asks for: a run with these options, or the usage.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<T> {
    /// Run with these options.
    Run(T),
    /// Print the usage and exit successfully (`-h`, `--help`).
    Help,
}

/// The arguments of a command line, consumed flag by flag.
#[derive(Debug, Clone)]
pub struct Args {
    args: VecDeque<String>,
    /// The value of the last `--flag=value`, handed out by the next call
    /// for a value.
    inline: Option<String>,
}

impl Args {
    /// The arguments, without the program name.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            inline: None,
        }
    }

    /// The arguments of this process.
    pub fn from_env() -> Self {
        Self::new(std::env::args().skip(1))
    }

    /// The next argument, with any `=value` split off and kept for
    /// [`value`](Self::value). `None` at the end.
    ///
    /// A `=value` nobody asked for is an error the caller sees on the
    /// next call, so `--json=yes` is not silently taken as `--json`.
    pub fn next_flag(&mut self) -> Option<String> {
        let arg = self.args.pop_front()?;
        match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                self.inline = Some(value.to_owned());
                Some(flag.to_owned())
            }
            _ => {
                self.inline = None;
                Some(arg)
            }
        }
    }

    /// Fails if the last flag had an `=value` that was not used (for flags
    /// that take no value).
    ///
    /// # Errors
    ///
    /// A [`CliError`] naming the flag.
    pub fn no_value(&mut self, flag: &str) -> Result<(), CliError> {
        match self.inline.take() {
            Some(value) => Err(CliError::new(format!("{flag} takes no value, not {value:?}"))),
            None => Ok(()),
        }
    }

    /// The value of `flag`: its `=value`, or the next argument.
    ///
    /// # Errors
    ///
    /// A [`CliError`] if there is no value (the line ends, or the next
    /// argument is another flag).
    pub fn value(&mut self, flag: &str, what: &str) -> Result<String, CliError> {
        if let Some(value) = self.inline.take() {
            return Ok(value);
        }
        match self.args.front() {
            Some(next) if !next.starts_with("--") => Ok(self.args.pop_front().unwrap_or_default()),
            _ => Err(CliError::new(format!("{flag} needs a value: {what}"))),
        }
    }

    /// The value of `flag` as a whole number in `range`.
    ///
    /// # Errors
    ///
    /// A [`CliError`] if the value is missing, not a number, or out of
    /// range.
    pub fn number(&mut self, flag: &str, range: RangeInclusive<u32>) -> Result<u32, CliError> {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        let value = self.value(flag, &expected)?;
        match value.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(CliError::new(format!("{flag} takes {expected}, not {value:?}"))),
        }
    }

    /// Reads the next argument, which must be `flag`, and its number
    /// (a shorthand for tests and one-flag commands).
    ///
    /// # Errors
    ///
    /// As [`number`](Self::number), or if the next argument is not `flag`.
    pub fn number_after(&mut self, flag: &str, range: RangeInclusive<u32>) -> Result<u32, CliError> {
        match self.next_flag() {
            Some(f) if f == flag => self.number(flag, range),
            Some(other) => Err(CliError::unknown(&other)),
            None => Err(CliError::new(format!("expected {flag}"))),
        }
    }
}

/// Prints `text` and a newline to standard output; a closed pipe (as in
/// `--help | head -3`) is not an error worth a panic.
pub fn print(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints `error: <message>` and a hint to standard error, and exits with
/// status 2 (the usual status for a usage error).
pub fn exit_usage(program: &str, error: &CliError) -> ! {
    eprintln!("error: {error}");
    eprintln!("run `{program} --help` for the flags");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_inline_or_next() {
        let mut args = Args::new(["--db=sqlite://a.db", "--db", "b.db", "--db"]);
        assert_eq!(args.next_flag().as_deref(), Some("--db"));
        assert_eq!(args.value("--db", "a URL").unwrap(), "sqlite://a.db");
        assert_eq!(args.next_flag().as_deref(), Some("--db"));
        assert_eq!(args.value("--db", "a URL").unwrap(), "b.db");
        assert_eq!(args.next_flag().as_deref(), Some("--db"));
        assert_eq!(
            args.value("--db", "a URL").unwrap_err().to_string(),
            "--db needs a value: a URL"
        );
        assert_eq!(args.next_flag(), None);
    }

    #[test]
    fn a_flag_is_not_taken_as_a_value() {
        let mut args = Args::new(["--runs", "--json"]);
        args.next_flag();
        let error = args.number("--runs", 1..=10).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--runs needs a value: a whole number from 1 to 10"
        );
        assert_eq!(args.next_flag().as_deref(), Some("--json"));
    }

    #[test]
    fn numbers_are_checked() {
        for bad in ["0", "11", "-1", "2.5", "", "many"] {
            let mut args = Args::new(["--runs", bad]);
            args.next_flag();
            let error = args.number("--runs", 1..=10).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("--runs takes a whole number from 1 to 10, not {bad:?}")
            );
        }
        let mut args = Args::new(["--runs", "10"]);
        args.next_flag();
        assert_eq!(args.number("--runs", 1..=10).unwrap(), 10);
    }

    #[test]
    fn an_unused_inline_value_is_an_error() {
        let mut args = Args::new(["--json=yes"]);
        assert_eq!(args.next_flag().as_deref(), Some("--json"));
        assert_eq!(
            args.no_value("--json").unwrap_err().to_string(),
            "--json takes no value, not \"yes\""
        );
    }

    #[test]
    fn unknown_arguments_are_named() {
        assert_eq!(
            CliError::unknown("--fast").to_string(),
            "unknown flag \"--fast\" (see --help)"
        );
        assert_eq!(
            CliError::unknown("fast").to_string(),
            "unexpected argument \"fast\" (see --help)"
        );
    }
}
