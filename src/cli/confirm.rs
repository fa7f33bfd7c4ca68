//! Consent for the commands that change or delete (`dlq replay`, `dlq purge`, `ledger prune`): whether to go
//! ahead, ask on the terminal or refuse with one line; `--json` never prompts.

use std::io::{BufRead, Write};
use tokio_util::sync::CancellationToken;

/// What a destructive command does before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consent {
    /// Go ahead: `--yes`, or a dry run (which changes nothing).
    Proceed,
    /// Ask on the terminal.
    Ask,
    /// Refuse, for this reason.
    Refuse(Refusal),
}

/// Why a destructive command refuses without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `--json` output is for scripts, so it never prompts.
    Json,
    /// Stdin is not a terminal: a script must say `--yes` explicitly.
    NotTerminal,
}

impl Refusal {
    /// The one line the command fails with; `what` names what it would change.
    pub(crate) fn message(self, what: &str) -> String {
        match self {
            Refusal::Json => {
                format!("refusing to change {what} without --yes: --json never prompts (add --yes, or --dry-run)")
            }
            Refusal::NotTerminal => format!(
                "refusing to change {what} without --yes when stdin is not a terminal (add --yes, or --dry-run)"
            ),
        }
    }
}

/// The flags every changing command (`dlq replay`, `dlq purge`, `ledger
/// prune`) takes, flattened into each one's arguments.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct ConfirmArgs {
    /// Show what would change, with the counts; change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the counts as one JSON object; never prompts, so it needs --yes or --dry-run.
    #[arg(long)]
    pub json: bool,
}

impl ConfirmArgs {
    /// [`consent`] for these flags.
    pub(crate) fn consent(&self, terminal: bool) -> Consent {
        consent(self.yes, self.dry_run, self.json, terminal)
    }
}

/// Whether a destructive command may go ahead (pure: the caller says whether
/// stdin is a terminal).
pub(crate) fn consent(yes: bool, dry_run: bool, json: bool, terminal: bool) -> Consent {
    if yes || dry_run {
        Consent::Proceed
    } else if json {
        Consent::Refuse(Refusal::Json)
    } else if !terminal {
        Consent::Refuse(Refusal::NotTerminal)
    } else {
        Consent::Ask
    }
}

/// The answer to [`ask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// y or yes.
    Yes,
    /// Anything else, or end of input.
    No,
    /// `stop` was cancelled (Ctrl-C) before an answer came.
    Interrupted,
}

/// Asks `question` on stderr and reads the answer from stdin, unless `stop`
/// is cancelled first. The read runs on a thread of its own, left behind if
/// `stop` wins (a blocking read cannot be cancelled; the process ends soon).
pub(crate) async fn ask(question: &str, stop: &CancellationToken) -> std::io::Result<Answer> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin().lock().read_line(&mut answer).map(|_| answer);
        let _ = tx.send(read);
    });
    tokio::select! {
        read = rx => {
            let answer = read.map_err(|_| std::io::Error::other("the terminal reader stopped"))??;
            Ok(if is_yes(&answer) { Answer::Yes } else { Answer::No })
        }
        _ = stop.cancelled() => {
            eprintln!();
            Ok(Answer::Interrupted)
        }
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_table() {
        use Consent::*;
        // (yes, dry_run, json, terminal) -> consent
        let cases = [
            ((true, false, false, false), Proceed),
            ((true, false, true, false), Proceed),
            ((false, true, true, false), Proceed),
            ((false, true, false, false), Proceed),
            ((false, false, true, true), Refuse(Refusal::Json)),
            ((false, false, true, false), Refuse(Refusal::Json)),
            ((false, false, false, false), Refuse(Refusal::NotTerminal)),
            ((false, false, false, true), Ask),
        ];
        for ((yes, dry, json, term), want) in cases {
            assert_eq!(consent(yes, dry, json, term), want, "{yes} {dry} {json} {term}");
        }
    }

    #[test]
    fn refusals_say_what_to_add() {
        for r in [Refusal::Json, Refusal::NotTerminal] {
            let m = r.message("the audit ledger");
            assert!(
                m.contains("the audit ledger") && m.contains("without --yes") && m.contains("--dry-run"),
                "{m}"
            );
            assert_eq!(m.lines().count(), 1);
        }
    }

    #[test]
    fn only_y_and_yes_confirm() {
        for (answer, want) in [
            ("y\n", true),
            (" YES \n", true),
            ("n\n", false),
            ("", false),
            ("yess", false),
        ] {
            assert_eq!(is_yes(answer), want, "{answer:?}");
        }
    }
}
