//! Follows an existing instance's stream live (`examples/watch.rs`): the
//! events after a cursor, then new ones as they commit, until the
//! instance has finished and every event is printed.

use std::io::Write;

use durable_core::{Client, InstanceId, RuntimeStatus};
use futures::StreamExt;

use crate::cli::{Args, CliError, Command};
use crate::document_processing::{self, DocumentJob};
use crate::render::{describe, JsonEvent};

/// The usage text of `examples/watch.rs`.
pub const USAGE: &str = "\
Prints an instance's stream live, from a cursor, until the instance has finished.

usage: watch --db URL --instance ID [--after N] [--json]

  --db URL          the store the instance is in
  --instance ID     the instance to follow
  --after N         start after sequence number N (default 0: from the first event)
  --json            one JSON line per event {\"instance\",\"seq\",\"name\",\"payload\"}
  -h, --help        this text";

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// The store URL.
    pub db: String,
    /// The instance.
    pub instance_id: String,
    /// Print the events after this sequence number.
    pub after: u64,
    /// JSON lines instead of readable lines.
    pub json: bool,
}

impl WatchOptions {
    /// Parses the command line (without the program name).
    ///
    /// ```
    /// use durable_workspace::cli::{Args, Command};
    /// use durable_workspace::watch::WatchOptions;
    ///
    /// let parsed = WatchOptions::parse(Args::new(["--db", "x.db", "--instance", "i", "--after", "7"])).unwrap();
    /// let Command::Run(options) = parsed else { panic!() };
    /// assert_eq!((options.instance_id.as_str(), options.after), ("i", 7));
    ///
    /// let error = WatchOptions::parse(Args::new(["--db", "x.db"])).unwrap_err();
    /// assert_eq!(error.to_string(), "--instance ID is required: the instance to follow");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`CliError`] for an unknown flag, a bad value or a missing
    /// `--db` or `--instance`.
    pub fn parse(mut args: Args) -> Result<Command<Self>, CliError> {
        let mut db = None;
        let mut instance = None;
        let mut after = 0;
        let mut json = false;
        while let Some(flag) = args.next_flag() {
            match flag.as_str() {
                "--db" => db = Some(args.value("--db", "a store URL such as sqlite://runs.db")?),
                "--instance" => instance = Some(args.value("--instance", "an instance id")?),
                "--after" => {
                    let value = args.value("--after", "a sequence number (0 for the start)")?;
                    after = value.trim().parse().map_err(|_| {
                        CliError::new(format!(
                            "--after takes a sequence number (0 for the start), not {value:?}"
                        ))
                    })?;
                }
                "--json" => {
                    args.no_value("--json")?;
                    json = true;
                }
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(CliError::unknown(other)),
            }
        }
        let db = db.ok_or_else(|| CliError::new("--db URL is required: the store the instance is in"))?;
        let instance_id =
            instance.ok_or_else(|| CliError::new("--instance ID is required: the instance to follow"))?;
        Ok(Command::Run(Self {
            db,
            instance_id,
            after,
            json,
        }))
    }
}

/// What a watch saw.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchReport {
    /// The instance.
    pub instance_id: InstanceId,
    /// Its status when the stream ended.
    pub status: RuntimeStatus,
    /// The sequence numbers printed, in order.
    pub seqs: Vec<u64>,
    /// The event names printed, in order.
    pub names: Vec<String>,
}

/// Why a watch could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The store could not be opened.
    #[error("cannot open the store {url:?}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: durable_core::StoreError,
    },
    /// The instance id is not valid.
    #[error(transparent)]
    InvalidInstanceId(#[from] durable_core::InvalidInstanceId),
    /// No instance has this id.
    #[error("no instance {0:?} in this store")]
    NotFound(String),
    /// The runtime failed.
    #[error(transparent)]
    Core(#[from] durable_core::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// Prints the instance's stream after `options.after` to `out`, live,
/// until the instance has finished and every event is printed.
///
/// # Errors
///
/// A [`WatchError`] for an unknown instance, a store error, or a failed
/// write.
pub async fn run<W: Write>(options: &WatchOptions, mut out: W) -> Result<WatchReport, WatchError> {
    let store = crate::open_store(&options.db)
        .await
        .map_err(|source| WatchError::Open {
            url: options.db.clone(),
            source,
        })?;
    let client = Client::new(store);
    let id = InstanceId::new(options.instance_id.clone())?;
    let meta = client
        .get_instance(&id)
        .await?
        .ok_or_else(|| WatchError::NotFound(options.instance_id.clone()))?;
    // Document-processing runs know their length: one superstep per executor.
    let total = (meta.name == document_processing::NAME)
        .then(|| meta.input.parse::<DocumentJob>().ok().map(|job| job.executors))
        .flatten();
    if !options.json {
        writeln!(
            out,
            "watching {id} ({}, {}, {} events so far) after #{}",
            meta.name, meta.status, meta.stream_len, options.after
        )?;
    }

    let mut seqs = Vec::new();
    let mut names = Vec::new();
    let mut bytes = 0;
    let mut stream = Box::pin(client.watch_events(&id, options.after));
    while let Some(event) = stream.next().await {
        let event = event?;
        if options.json {
            writeln!(out, "{}", JsonEvent::of(&event).to_line())?;
        } else {
            writeln!(out, "{}", describe(&event, total))?;
        }
        out.flush()?;
        bytes += event.payload.as_str().len();
        seqs.push(event.seq);
        names.push(event.name);
    }
    let status = client
        .get_instance(&id)
        .await?
        .map_or(RuntimeStatus::Pending, |m| m.status);
    if !options.json {
        writeln!(
            out,
            "{id} is {status}: {} event(s), {} printed",
            seqs.len(),
            crate::render::human_bytes(bytes)
        )?;
    }
    Ok(WatchReport {
        instance_id: id,
        status,
        seqs,
        names,
    })
}
